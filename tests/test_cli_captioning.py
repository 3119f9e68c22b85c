"""The `seq2seq` command line on the captioning config: a tiny fit, then predict and test from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_cli import ROOT, last_ckpt, seq2seq

CONFIG = ROOT / "configs" / "captioning" / "shapes.yaml"
TINY = [
    "--data.init_args.num_train=64", "--data.init_args.num_val=8", "--data.init_args.num_test=8",
    "--data.init_args.image_size=32", "--data.init_args.batch_size=16",
    "--model.init_args.encoder.init_args.width_mult=0.125", "--model.init_args.decoder.init_args.hidden_size=16",
    "--model.init_args.max_len=12", "--trainer.max_epochs=1", "--trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def trained(tiny_shapes_run: Path) -> Path:
    """The session's tiny fit of TINY (tests/conftest.py, which checks the examples printed at the end of
    fit); its run folder."""
    return tiny_shapes_run


def test_fit_writes_checkpoint_config_and_attention_pictures(trained: Path) -> None:
    raw = torch.load(last_ckpt(trained), weights_only=True)
    assert raw["hyper_parameters"]["encoder"]["class_path"] == "seq2seq_lightning.encoders.cnn.CNNEncoder"
    assert set(raw["hyper_parameters"]["tokenizers"]) == {"target"} and raw["image_transform"]["size"] == 32
    assert "CaptioningModule" in next(trained.rglob("config.yaml")).read_text()
    pictures = sorted(p.name for p in trained.rglob("attention/epoch=0/*.png"))
    assert pictures == ["0.png", "1.png", "2.png", "3.png"]


def test_predict_folder_one_row_per_file_with_error_rows(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 641, 3), dtype=np.uint8)).save(folder / "a_photo.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 300), dtype=np.uint8)).save(folder / "b_gray.png")
    Image.new("RGBA", (33, 65), (255, 0, 0, 128)).save(folder / "c_rgba.png")
    data = (folder / "a_photo.jpg").read_bytes()
    (folder / "d_truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "e_text.jpg").write_text("this is a text file")
    out = tmp_path / "out.jsonl"
    seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(last_ckpt(trained)),
            f"--data.init_args.predict_path={folder}", "--output", str(out), "--model.strategy=beam",
            "--model.strategy.beam_size=2", f"--trainer.default_root_dir={tmp_path}")
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 5
    records = [json.loads(line) for line in lines[:-1]]
    assert [Path(r["input"]).name for r in records] == sorted(p.name for p in folder.iterdir())
    assert all(r["output"] and "error" not in r for r in records[:3])
    for bad in records[3:]:
        assert bad["output"] == "" and bad["nbest"] == [] and bad["error"]
    assert "truncated" in records[3]["error"] and "cannot identify" in records[4]["error"]


def test_test_subcommand_with_beam_reports_captioning_metrics(trained: Path, tmp_path: Path) -> None:
    proc = seq2seq("test", "-c", str(CONFIG), *TINY, "--ckpt_path", str(last_ckpt(trained)),
                   "--model.strategy=beam", f"--trainer.default_root_dir={tmp_path}")
    for metric in ("test/bleu1", "test/bleu4", "test/cider", "test/loss", "test/ppl"):
        assert metric in proc.stdout, metric
