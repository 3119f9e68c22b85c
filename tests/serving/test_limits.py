"""Where `seq2seq serve` reads its source length limit from: the option, ``--config``, the training run's
``config.yaml`` in either checkpoint layout, else the data module's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq_lightning.serving.limits import run_config, source_limit

MODULE = "seq2seq_lightning.TranslationModule"


def run_yaml(limit: int, module: str = MODULE) -> str:
    return (f"model:\n  class_path: {module}\ndata:\n  class_path: seq2seq_lightning.data.translation."
            f"TranslationDataModule\n  init_args:\n    train_path: nowhere.tsv\n    max_source_len: {limit}\n")


@pytest.mark.parametrize("layout", [
    "checkpoints",  # no logger: RUN/checkpoints/x.ckpt
    "lightning_logs/version_0/checkpoints",  # CSV or TensorBoard logger
    "seq2seq-lightning/abc123/checkpoints",  # the W&B logger: RUN/PROJECT/ID/checkpoints
])
def test_the_run_config_is_found_in_every_logger_layout(tmp_path: Path, layout: str) -> None:
    ckpt = tmp_path / layout / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (tmp_path / "config.yaml").write_text(run_yaml(37), encoding="utf-8")
    assert run_config(ckpt, MODULE) == tmp_path / "config.yaml"
    assert source_limit(ckpt, {"_class_path": MODULE}) == (37, f"the run's config {tmp_path / 'config.yaml'}")
    assert source_limit(ckpt, {"_class_path": MODULE}, max_source_len=5) == (5, "--max_source_len")
    given = tmp_path / "given.yaml"
    given.write_text(run_yaml(11), encoding="utf-8")
    assert source_limit(ckpt, {"_class_path": MODULE}, config=given)[0] == 11


def test_a_run_config_of_another_module_or_none_gives_the_default(tmp_path: Path) -> None:
    ckpt = tmp_path / "seq2seq-lightning" / "abc123" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert run_config(ckpt, MODULE) is None
    assert source_limit(ckpt, {"_class_path": MODULE}) == (200, "the TranslationDataModule default")
    (tmp_path / "config.yaml").write_text(run_yaml(37, "seq2seq_lightning.CaptioningModule"), encoding="utf-8")
    assert run_config(ckpt, MODULE) is None
    assert source_limit(ckpt, {"_class_path": MODULE})[0] == 200
    with pytest.raises(ValueError, match="max_source_len must be positive"):
        source_limit(ckpt, {}, max_source_len=0)
