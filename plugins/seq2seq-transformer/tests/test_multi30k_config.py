"""The plugin's Multi30k config parses, instantiates and trains a step (on a tiny stand-in of the data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import yaml
from seq2seq_transformer import TransformerDecoder, TransformerEncoder

from seq2seq_lightning.cli import Seq2SeqCLI

PLUGIN = Path(__file__).resolve().parents[1]
CONFIG = PLUGIN / "configs" / "multi30k_de_en_transformer.yaml"
RNN_CONFIG = PLUGIN.parents[1] / "configs" / "translation" / "multi30k_de_en.yaml"


def tiny_multi30k(folder: Path) -> list[str]:
    """A few German/English lines in the Multi30k file layout; the options that point the config there."""
    words = ["ein", "Mann", "eine", "Frau", "Hund", "läuft", "sitzt", "auf", "der", "Straße"]
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("de", "en"):
            lines = [" ".join(words[(i + j) % len(words)] for j in range(3 + i % 5)) + "." for i in range(40)]
            with gzip.open(folder / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    return [f"--data.init_args.{key}={folder}/{split}.{{lang}}.gz"
            for key, split in (("train_path", "train"), ("val_path", "val"), ("test_path", "test_2016_flickr"))]


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_config_instantiates_and_trains_a_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = ["-c", str(CONFIG), f"--trainer.default_root_dir={tmp_path}", "--data.init_args.vocab_size=300",
            *tiny_multi30k(tmp_path)]
    cli = Seq2SeqCLI(args=args, run=False)
    model = cli.model
    assert isinstance(model.encoder, TransformerEncoder) and isinstance(model.decoder, TransformerDecoder)
    assert model.decoder.d_model == model.encoder.output_size == 256 and len(model.decoder.layers) == 3
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    optimizers = model.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    logits, attention = model(batch)  # teacher forcing over the batch
    assert attention.shape[:2] == logits.shape[:2]
    gold = batch.target[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), gold.reshape(-1), ignore_index=0)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_schedule_spans_the_epochs_and_the_data_is_the_rnn_configs() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    schedule = config["model"]["init_args"]["lr_scheduler"]
    # Lightning steps the scheduler once an epoch: OneCycleLR must have a step for every epoch.
    assert schedule["class_path"].endswith("OneCycleLR")
    assert schedule["init_args"]["total_steps"] == config["trainer"]["max_epochs"]
    assert config["data"] == yaml.safe_load(RNN_CONFIG.read_text())["data"]
    strategy = config["model"]["init_args"]["strategy"]
    assert strategy["class_path"] == "beam" and strategy["init_args"]["beam_size"] == 5
    for part in ("encoder", "decoder"):
        assert config["model"]["init_args"][part]["class_path"] == "transformer"
