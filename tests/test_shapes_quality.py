"""The bar of the captioning default: the shipped shapes config reaches test/bleu4 >= 80 with beam search."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/captioning/shapes.yaml"


@pytest.mark.slow
def test_shapes_config_reaches_bleu4_80_with_beam(tmp_path: Path) -> None:
    env = dict(os.environ, WANDB_MODE="offline")
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", "fit", "-c", CONFIG,
                    f"--trainer.default_root_dir={tmp_path}"], cwd=ROOT, env=env, check=True, timeout=1800,
                   capture_output=True)
    fit_minutes = (time.monotonic() - start) / 60
    ckpt = max(tmp_path.rglob("last.ckpt"))
    subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", "test", "-c", CONFIG, "--ckpt_path", str(ckpt),
                    "--model.strategy=beam", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                    f"--trainer.logger.save_dir={tmp_path / 'test'}", f"--trainer.default_root_dir={tmp_path}"],
                   cwd=ROOT, env=env, check=True, timeout=600, capture_output=True)
    with open(next((tmp_path / "test").rglob("metrics.csv"))) as handle:
        rows = list(csv.DictReader(handle))
    metrics = {k: float(v) for row in rows for k, v in row.items() if v}
    print(f"fit {fit_minutes:.1f} min; " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(metrics.items())))
    assert metrics["test/bleu4"] >= 80.0
    assert metrics["test/bleu1"] >= metrics["test/bleu4"] and metrics["test/cider"] > 0
