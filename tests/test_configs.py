"""Every shipped YAML parses and instantiates (model, data and trainer)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml

from seq2seq_lightning.cli import Seq2SeqCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
SHARED_DATA = "../shared/data/"


def _data_args(path: Path, tmp_path: Path) -> list[str]:
    """Configs that read the shared Multi30k copy get a tiny stand-in with the same file layout (the
    default tests never need the shared data)."""
    init = yaml.safe_load(path.read_text())["data"].get("init_args", {})
    if not any(str(v).startswith(SHARED_DATA) for v in init.values()):
        return []
    words = ["ein", "Mann", "eine", "Frau", "Hund", "läuft", "sitzt", "auf", "der", "Straße"]
    for split in ("train", "val", "test_2016_flickr"):
        for lang in (init["source_lang"], init["target_lang"]):
            lines = [" ".join(words[(i + j) % len(words)] for j in range(3 + i % 5)) + "." for i in range(40)]
            with gzip.open(tmp_path / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    return [f"--data.init_args.{key}={tmp_path}/{split}.{{lang}}.gz"
            for key, split in (("train_path", "train"), ("val_path", "val"), ("test_path", "test_2016_flickr"))]


def test_configs_exist() -> None:
    assert any(p.name == "dates.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_instantiates(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = ["-c", str(path), f"--trainer.default_root_dir={tmp_path}", *_data_args(path, tmp_path)]
    cli = Seq2SeqCLI(args=args, run=False)
    assert cli.model.strategy is not None and cli.model.encoder is not None
    assert cli.trainer.default_root_dir == str(tmp_path)
    batch = next(iter(_loader(cli.datamodule)))
    logits, _ = cli.model(batch)
    assert logits.shape[-1] == cli.model.target_tokenizer.vocab_size


def _loader(dm):
    dm.setup("fit")
    return dm.train_dataloader()


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("multi30k")], ids=lambda p: p.name)
def test_multi30k_configs_name_the_shared_files(path: Path) -> None:
    init = yaml.safe_load(path.read_text())["data"]["init_args"]
    assert init["tokenizer"] == "bpe"
    model = yaml.safe_load(path.read_text())["model"]["init_args"]
    assert model["encoder"]["init_args"]["bidirectional"] is True and model["decoder"]["init_args"]["attention"]
    assert model["strategy"]["class_path"] == "beam" and model["strategy"]["init_args"]["beam_size"] == 5
    for key, split in (("train_path", "train"), ("val_path", "val"), ("test_path", "test_2016_flickr")):
        assert init[key] == f"{SHARED_DATA}multi30k/{split}.{{lang}}.gz"
        for lang in (init["source_lang"], init["target_lang"]):
            file = ROOT / init[key].replace("{lang}", lang)
            if (ROOT / SHARED_DATA).exists() and not file.exists():
                pytest.fail(f"{path.name} names {file}, which does not exist")
