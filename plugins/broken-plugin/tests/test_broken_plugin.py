"""A broken plugin is reported by name and harms nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from seq2seq_broken_example import ERROR_MESSAGE

from seq2seq_lightning.registry import ENCODERS, STRATEGIES

DIST = "seq2seq-broken-example"


@pytest.fixture(autouse=True)
def fresh_registries():
    for registry in (ENCODERS, STRATEGIES):
        registry.reload()
    yield
    for registry in (ENCODERS, STRATEGIES):
        registry.reload()


def test_both_entry_points_are_reported_with_their_distribution() -> None:
    names = ENCODERS.names()
    assert "broken_import" not in names and "not_an_encoder" not in names
    failures = {f.name: f for f in ENCODERS.failures}
    assert failures["broken_import"].dist == DIST
    assert failures["broken_import"].value == "seq2seq_broken_example.fails_on_import:ExampleEncoder"
    assert "ImportError" in failures["broken_import"].error and ERROR_MESSAGE in failures["broken_import"].error
    assert failures["not_an_encoder"].dist == DIST
    assert "not a subclass of seq2seq_lightning.encoders.base.Encoder" in failures["not_an_encoder"].error


def test_everything_else_keeps_working() -> None:
    assert "rnn" in ENCODERS.names()
    assert {"greedy", "beam", "sampling"} <= set(STRATEGIES.names())
    assert not STRATEGIES.failures
    encoder = ENCODERS.build("rnn", vocab_size=10)
    assert encoder.output_size > 0


def test_asking_for_a_broken_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known encoder names: .*rnn"):
        ENCODERS.get("broken_import")


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="300", WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=300)


def test_plugins_command_reports_them_and_exits_zero() -> None:
    proc = cli("plugins")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Plugins that failed to load" in out
    for text in ("broken_import", "not_an_encoder", DIST, ERROR_MESSAGE, "rnn", "beam"):
        assert text in out, text


def test_cli_rejects_a_broken_name_with_the_known_names(tmp_path) -> None:
    proc = cli("fit", "--model=seq2seq_lightning.TranslationModule",
               "--data=seq2seq_lightning.data.dates.DatesDataModule", "--data.num_train=50", "--data.num_val=10",
               "--data.num_test=10", "--model.encoder=broken_import", f"--trainer.default_root_dir={tmp_path}")
    assert proc.returncode != 0
    assert "unknown encoder 'broken_import'" in proc.stderr and "rnn" in proc.stderr
    assert "Traceback" not in proc.stderr
