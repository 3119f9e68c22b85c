"""Every shipped YAML parses and instantiates (model, data and trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq_lightning.cli import Seq2SeqCLI

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_configs_exist() -> None:
    assert any(p.name == "dates.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_instantiates(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = Seq2SeqCLI(args=["-c", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.strategy is not None and cli.model.encoder is not None
    assert cli.trainer.default_root_dir == str(tmp_path)
    batch = next(iter(_loader(cli.datamodule)))
    logits, _ = cli.model(batch)
    assert logits.shape[-1] == cli.model.target_tokenizer.vocab_size


def _loader(dm):
    dm.setup("fit")
    return dm.train_dataloader()
