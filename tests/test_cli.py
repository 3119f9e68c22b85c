"""The `seq2seq` command line, driven in subprocesses like a user would (parse-only commands, ``--help`` and
``--print_config``, in this process: ``seq2seq_here`` in tests/conftest.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from tests.helpers.processes import cli, started

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "translation" / "dates.yaml"
TINY = [
    "--data.init_args.num_train=300", "--data.init_args.num_val=40", "--data.init_args.num_test=40",
    "--model.init_args.encoder.init_args.hidden_size=16", "--model.init_args.decoder.init_args.hidden_size=16",
    "--trainer.max_epochs=1", "--trainer.enable_model_summary=false",
]


def seq2seq(*args: str, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", *args], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"seq2seq {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def seq2seq_together(*commands: list[str], check: bool = True, cwd: Path = ROOT) -> list[subprocess.CompletedProcess]:
    """``seq2seq ARGS`` for every ARGS in ``commands``, each run as :func:`seq2seq` runs it, all started at
    once: for runs that do not depend on each other (their start-ups, mostly imports on one core, overlap).
    Side by side, each run has one thread, so that their threads do not spin against each other's on two
    cores. Their results, in order; with ``check``, an AssertionError for the first that failed."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    if len(commands) > 1:
        env["OMP_NUM_THREADS"] = "1"
    with started([cli(*args) for args in commands], [cwd] * len(commands), env=env,
                 timeout=600 * len(commands), merge_stderr=False) as wait:  # seq2seq() gives each run 600 s
        results = wait()
    for args, result in zip(commands, results):
        if check and result.returncode != 0:
            raise AssertionError(f"seq2seq {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
    return results


@pytest.fixture(scope="module")
def trained(tiny_dates_run: Path) -> Path:
    """One tiny fit shared by the tests below (``fit -c dates.yaml`` with TINY, trained once a session in
    tests/conftest.py, which checks the examples printed at the end of fit); returns its run folder."""
    return tiny_dates_run


def last_ckpt(run: Path) -> Path:
    found = sorted(run.rglob("last.ckpt"))
    assert found, f"no last.ckpt under {run}"
    return found[-1]


def test_fit_writes_checkpoint_and_config_under_root_dir(trained: Path) -> None:
    ckpt = last_ckpt(trained)
    configs = list(trained.rglob("config.yaml"))
    assert configs and "TranslationModule" in configs[0].read_text()
    raw = torch.load(ckpt, weights_only=True)
    assert raw["hyper_parameters"]["encoder"]["class_path"] == "seq2seq_lightning.encoders.rnn.RNNEncoder"


def test_predict_txt_and_jsonl_in_input_order(trained: Path, tmp_path: Path) -> None:
    lines = ["25th of June, 2009", "", "3 mars 1998", "   ", "Jun 1, 1950", "x" * 500]
    src = tmp_path / "in.txt"
    src.write_bytes(("\ufeff" + "\r\n".join(lines) + "\n").encode("utf-8"))
    ckpt = str(last_ckpt(trained))
    seq2seq_together(*(["predict", "-c", str(CONFIG), "--ckpt_path", ckpt, f"--data.init_args.predict_path={src}",
                        "--output", str(tmp_path / f"out.{suffix}"), "--model.strategy=beam",
                        "--model.strategy.n_best=2", f"--trainer.default_root_dir={tmp_path / suffix}"]
                       for suffix in ("txt", "jsonl")))
    for suffix in ("txt", "jsonl"):
        out = tmp_path / f"out.{suffix}"
        rows = out.read_text(encoding="utf-8").split("\n")
        assert rows[-1] == "" and len(rows) - 1 == len(lines)
        if suffix == "jsonl":
            records = [json.loads(r) for r in rows[:-1]]
            assert [r["input"] for r in records[:5]] == lines[:5]
            assert records[1]["output"] == "" and records[3]["output"] == ""
            assert len(records[0]["nbest"]) == 2 and records[0]["score"] == records[0]["nbest"][0]["score"]
            assert records[0]["nbest"][0]["score"] >= records[0]["nbest"][1]["score"]
            txt = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")[:-1]
            assert [r["output"] for r in records] == txt
        else:
            assert rows[1] == "" and rows[3] == ""
        assert not list(tmp_path.glob(".out.*.partial"))


def test_streamed_predict_equals_translate(trained: Path, tmp_path: Path) -> None:
    """5,000 lines, two DataLoader workers, length-sorted chunks: every line once, in input order,
    the same outputs as the in-memory ``translate()``."""
    import random

    from seq2seq_lightning import TranslationModule

    rng = random.Random(0)
    pool = ["25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "Dienstag, 3. März 1998", "12/01/1999", "", " "]
    lines = [rng.choice(pool) + ("" if i % 4 else f" {i % 97}") for i in range(5000)]
    src = tmp_path / "in.txt.gz"
    src.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    out = tmp_path / "out.txt"
    ckpt = last_ckpt(trained)
    seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(ckpt), f"--data.init_args.predict_path={src}",
            "--output", str(out), "--model.strategy=greedy", "--data.init_args.eval_batch_size=16",
            "--data.init_args.num_workers=2", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}")
    rows = out.read_text(encoding="utf-8").split("\n")
    assert rows[-1] == "" and len(rows) - 1 == len(lines)
    model = TranslationModule.load_from_checkpoint(ckpt)
    assert rows[:-1] == model.translate(lines, strategy="greedy")


def test_test_subcommand_reports_metrics(trained: Path, tmp_path: Path) -> None:
    proc = seq2seq("test", "-c", str(CONFIG), *TINY, "--ckpt_path", str(last_ckpt(trained)),
                   f"--trainer.default_root_dir={tmp_path}")
    for metric in ("test/bleu", "test/exact_match", "test/loss", "test/ppl"):
        assert metric in proc.stdout, metric
    assert "Example outputs (test)" in proc.stdout


def test_registry_names_and_class_paths_both_work(seq2seq_here: Seq2SeqHere) -> None:
    by_name = seq2seq_here("fit", "-c", str(CONFIG), "--model.encoder=rnn", "--model.encoder.cell=lstm",
                           "--model.strategy=beam", "--model.strategy.beam_size=3", "--print_config")
    assert "class_path: seq2seq_lightning.encoders.rnn.RNNEncoder" in by_name.stdout
    assert "cell: lstm" in by_name.stdout and "beam_size: 3" in by_name.stdout
    by_path = seq2seq_here("fit", "-c", str(CONFIG),
                           "--model.strategy=seq2seq_lightning.search.beam.BeamSearch", "--print_config")
    assert "class_path: seq2seq_lightning.search.beam.BeamSearch" in by_path.stdout


def test_unknown_strategy_is_a_short_error() -> None:
    """In a real process (the other bad options of tests/test_errors.py run in this one)."""
    proc = seq2seq("fit", "-c", str(CONFIG), "--model.strategy=bem", "--print_config", check=False)
    assert proc.returncode != 0
    assert "bem" in proc.stderr and "Traceback" not in proc.stderr


def test_help_documents_options(seq2seq_here: Seq2SeqHere) -> None:
    out = seq2seq_here("fit", "--model.help", "seq2seq_lightning.TranslationModule").stdout
    assert "label smoothing" in out and "max_len_a" in out
    out = seq2seq_here("fit", "--model.strategy.help", "beam").stdout
    assert "beam_size" in out and "length_penalty" in out


def test_plugins_command_lists_builtins() -> None:
    """In a real process: the one `seq2seq plugins` run where the example plugins are not installed."""
    out = seq2seq("plugins").stdout
    for name in ("rnn", "greedy", "beam", "sampling", "seq2seq-lightning"):
        assert name in out


def test_print_config_gives_a_config_that_runs(seq2seq_here: Seq2SeqHere, tmp_path: Path) -> None:
    printed = seq2seq_here("fit", "-c", str(CONFIG), *TINY, "--trainer.logger=false", "--print_config").stdout
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    seq2seq("fit", "-c", str(saved), "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={tmp_path / 'run'}")
    assert list((tmp_path / "run").rglob("last.ckpt"))


def test_bf16_mixed_trains_on_cpu(tmp_path: Path) -> None:
    proc = seq2seq("fit", "-c", str(CONFIG), *TINY, "--trainer.precision=bf16-mixed", "--trainer.logger=false",
                   "--trainer.max_steps=4", f"--trainer.default_root_dir={tmp_path}")
    ckpt = torch.load(last_ckpt(tmp_path), weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    assert ckpt["global_step"] == 4 and proc.returncode == 0
