"""docs/new-task.md: its module, data module and config train and test a third task from the CLI."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.helpers.processes import cli, started

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "new-task.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def seq2seq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd), WANDB_MODE="offline", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", *args], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@contextlib.contextmanager
def seq2seq_aside(*args: str, cwd: Path) -> Iterator[Callable[[], subprocess.CompletedProcess]]:
    """``seq2seq(*args, cwd=cwd)`` started on entering, to run beside the body; the callable it gives waits
    for it and returns its result. Killed on leaving if it is still running."""
    env = dict(os.environ, PYTHONPATH=str(cwd), WANDB_MODE="offline", COLUMNS="200")
    with started([cli(*args)], [cwd], env=env, timeout=600, merge_stderr=False) as wait:
        yield lambda: wait()[0]


def test_the_walk_through_trains_and_tests_a_third_task(tmp_path: Path) -> None:
    (code,), (config,) = blocks("python"), blocks("yaml")
    (tmp_path / "reverse_task.py").write_text(code)
    (tmp_path / "reverse.yaml").write_text(config)
    small = ["--trainer.max_epochs=2", "--data.init_args.num_train=600", "--data.init_args.num_val=40",
             "--data.init_args.num_test=40"]
    with seq2seq_aside("fit", "-c", "reverse.yaml", "--model.help", "reverse_task.ReverseModule",
                       cwd=tmp_path) as help_result:  # the help runs beside the fit and the test
        fit = seq2seq("fit", "-c", "reverse.yaml", *small, cwd=tmp_path)
        assert fit.returncode == 0, fit.stderr[-3000:]
        assert "Example outputs (val)" in fit.stdout
        ckpts = sorted((tmp_path / "runs" / "reverse").rglob("*.ckpt"))
        assert ckpts, "fit wrote no checkpoint"
        test = seq2seq("test", "-c", "reverse.yaml", "--ckpt_path", str(ckpts[-1]), *small, cwd=tmp_path)
        assert test.returncode == 0, test.stderr[-3000:]
        assert "test/exact_match" in test.stdout and "test/loss" in test.stdout
        helped = help_result()
    assert "extra_steps" in helped.stdout and "decoding may run for the source length" in helped.stdout


def test_the_cli_names_no_task() -> None:
    source = (ROOT / "seq2seq_lightning" / "cli.py").read_text()
    for name in ("TranslationModule", "CaptioningModule", "max_len_a", "max_len_b", "captioning", "translation"):
        assert name not in source, name
