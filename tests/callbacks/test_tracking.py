"""W&B tracking from the shipped config: offline without credentials, every file in the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.callbacks.wandb_records import iter_records

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--data.init_args.num_train=200", "--data.init_args.num_val=20", "--data.init_args.num_test=20",
        "--model.init_args.encoder.init_args.hidden_size=16", "--model.init_args.decoder.init_args.hidden_size=16",
        "--trainer.max_epochs=2", "--trainer.enable_model_summary=false"]


def fit(root: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"))
    return subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", "fit", "-c", "configs/translation/dates.yaml",
                           *TINY, f"--trainer.default_root_dir={root}", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=True)


def test_offline_run_inside_run_folder_with_config_metrics_tables(tmp_path: Path) -> None:
    root, home = tmp_path / "run", tmp_path / "home"
    home.mkdir()
    fit(root, home, "--trainer.logger.init_args.log_model=true")
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(root.rglob("*"))[:20]
    run = runs[0]
    records = list(iter_records(next(run.glob("run-*.wandb"))))
    kinds = [r.WhichOneof("record_type") for r in records]
    config_keys = {u.key for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update}
    assert "config" in config_keys  # the resolved CLI config
    resolved = next(json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
                    for u in r.config.update if u.key == "config")
    assert resolved["data"]["class_path"] == "seq2seq_lightning.data.dates.DatesDataModule"
    history = [{(i.key or "/".join(i.nested_key)): i.value_json for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    val = [h for h in history if "val/bleu" in h]
    assert len(val) == 2 and all("val/loss" in h and "val/ppl" in h for h in val)
    assert sum("val/samples/_type" in h for h in history) == 2
    tables = sorted((run / "files" / "media" / "table" / "val").glob("samples_*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["epoch", "source", "reference", "hypothesis"] and len(table["data"]) >= 1
    assert list((run / "files" / "media" / "images" / "val").glob("attention_*.png"))
    assert list((root / "attention" / "epoch=1").glob("*.png"))
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert any(a.type == "model" for a in artifacts)  # log_model: the best checkpoint
    assert "exit" in kinds
    # nothing in the home directory
    assert [p for p in home.rglob("*") if "wandb" in str(p).lower()] == []
    assert not (ROOT / "wandb").exists()


def test_logger_false_turns_tracking_off(tmp_path: Path) -> None:
    root, home = tmp_path / "run", tmp_path / "home"
    home.mkdir()
    fit(root, home, "--trainer.logger=false")
    assert not (root / "wandb").exists()
    assert list(root.rglob("last.ckpt"))
