"""Bad input and bad configuration: short errors that name the key, name or path; no traceback."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from seq2seq_lightning.checkpoints import UnsafeCheckpointError, load_checkpoint
from tests.test_cli import (
    CONFIG,
    last_ckpt,
    seq2seq,
    trained,  # noqa: F401 - the shared tiny run fixture
)

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere


@pytest.mark.parametrize(("option", "expected"), [
    ("--model.encoder.hiden_size=3", ["hiden_size", "--model.encoder.hiden_size"]),
    ("--model.init_args.label_smoothing=abc", ["label_smoothing", "float", "abc"]),
    ("--model.encoder=rnnx", ["unknown encoder 'rnnx'", "known encoder names", "rnn"]),
    ("--model.strategy=bem", ["bem", "beam", "greedy"]),
    ("--data.init_args.nosuch=1", ["nosuch", "not accepted"]),
])
def test_bad_options_give_a_short_error(seq2seq_here: Seq2SeqHere, option: str, expected: list[str]) -> None:
    """Parsed in this process, as the console script parses them (tests/test_cli.py checks one in a real process)."""
    proc = seq2seq_here("fit", "-c", str(CONFIG), option, "--trainer.logger=false", "--trainer.max_steps=1",
                        check=False)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, proc.stderr[-2000:]
    for word in expected:
        assert word in error[0]
    assert "Traceback" not in proc.stderr and "Given value" not in proc.stderr
    assert len(error[0]) < 400


def test_unknown_key_in_a_config_file(seq2seq_here: Seq2SeqHere, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: seq2seq_lightning.TranslationModule\n  init_args:\n    bogus_key: 3\n")
    proc = seq2seq_here("fit", "-c", str(bad), check=False)
    assert proc.returncode == 2 and "bogus_key" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_files_are_named(seq2seq_here: Seq2SeqHere, trained: Path, tmp_path: Path) -> None:  # noqa: F811
    """The missing input in a real process (predict starts); the missing checkpoint in this one (refused
    before anything is built)."""
    missing = tmp_path / "nope.txt"
    proc = seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(last_ckpt(trained)),
                   f"--data.init_args.predict_path={missing}", "--output", str(tmp_path / "o.txt"),
                   "--trainer.logger=false", check=False)
    assert proc.returncode != 0 and str(missing) in proc.stderr and "Traceback" not in proc.stderr
    proc = seq2seq_here("predict", "-c", str(CONFIG), "--ckpt_path", str(tmp_path / "none.ckpt"),
                        "--trainer.logger=false", check=False)
    assert proc.returncode != 0 and "none.ckpt" in proc.stderr and "Traceback" not in proc.stderr


class Payload:
    """Anything a pickle would rebuild by running code."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_pickled_payload_is_refused(seq2seq_here: Seq2SeqHere, trained: Path, tmp_path: Path) -> None:  # noqa: F811
    ckpt = torch.load(last_ckpt(trained), weights_only=True)
    ckpt["extra"] = Payload()
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil, pickle_module=pickle)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*evil.ckpt"):
        load_checkpoint(evil)
    from seq2seq_lightning import TranslationModule

    with pytest.raises(UnsafeCheckpointError):
        TranslationModule.load_from_checkpoint(evil)
    proc = seq2seq_here("predict", "-c", str(CONFIG), "--ckpt_path", str(evil), "--trainer.logger=false",
                        check=False)
    assert proc.returncode != 0 and "refusing to load" in proc.stderr
    assert "this ran while loading" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_messy_lines_give_one_result_each_in_order(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    lines = ["", "   ", "\t", "25th of June, 2009" * 6000,  # over 100k characters
             "3 mars\x00 1998", "Jun 1, 1950 \U0001f600", "\u05d9\u05d5\u05dd 3 \u0645\u0627\u0631\u0633 1998",
             "12 Dec 2020"]
    raw = b"\xef\xbb\xbf" + "\r\n".join(lines[:4]).encode() + b"\r\n" + b"bad \xff\xfe bytes\n"
    raw += "\n".join(lines[4:]).encode() + b"\n"
    src = tmp_path / "messy.txt"
    src.write_bytes(raw)
    expected_inputs = lines[:4] + ["bad \ufffd\ufffd bytes"] + lines[4:]
    out = tmp_path / "out.jsonl"
    proc = seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(last_ckpt(trained)),
                   f"--data.init_args.predict_path={src}", "--output", str(out), "--trainer.logger=false",
                   f"--trainer.default_root_dir={tmp_path}")
    rows = [json.loads(r) for r in out.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in rows] == expected_inputs
    assert [r["output"] for r in rows[:3]] == ["", "", ""]
    assert all(r["output"] for r in rows[3:])
    assert "truncat" in (proc.stdout + proc.stderr).lower()  # the over-long line is cut, with a warning


def test_interrupted_predict_leaves_no_file_under_the_output_name(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in.txt"
    src.write_text("\n".join(f"{d} March 1999" for d in range(1, 29)) * 20 + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    cmd = [sys.executable, "-m", "seq2seq_lightning.cli", "predict", "-c", str(CONFIG), "--ckpt_path",
           str(last_ckpt(trained)), f"--data.init_args.predict_path={src}", "--output", str(out),
           "--data.init_args.eval_batch_size=4", "--trainer.logger=false",
           "--trainer.callbacks+=tests.helpers.slow.SlowDown", "--trainer.callbacks.seconds=0.2",
           f"--trainer.default_root_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, WANDB_MODE="disabled"))
    partial = tmp_path / ".out.txt.partial"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.exists() and partial.stat().st_size > 0):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and partial.stat().st_size > 0, "predict was not caught in the middle"
    assert not out.exists()
