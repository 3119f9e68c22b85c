"""The bar of the embedded default: the shipped dates config reaches >= 99% exact match with beam search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dates_config_reaches_99_percent_exact_match(tmp_path: Path) -> None:
    env = dict(os.environ, WANDB_MODE="offline")
    subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", "fit", "-c", "configs/translation/dates.yaml",
                    f"--trainer.default_root_dir={tmp_path}"], cwd=ROOT, env=env, check=True, timeout=1200,
                   capture_output=True)
    ckpt = max(tmp_path.rglob("last.ckpt"))
    out = subprocess.run([sys.executable, "benchmarks/dates_eval.py", str(ckpt), "--strategy", "beam",
                          "--beam-size", "4"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    figures = {r["figure"]: r["value"] for r in map(json.loads, out.stdout.splitlines()) if "figure" in r}
    assert figures["exact_match/beam"] >= 0.99
    styles = [k for k in figures if k.startswith("exact_match/beam/")]
    assert len(styles) == 20
    assert min(figures[k] for k in styles) >= 0.95
