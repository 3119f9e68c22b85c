"""Fixtures for the whole suite.

The tiny dates and shapes fits that several modules decode with are trained once a session through the CLI
(each module used to train its own, with the same command), both at once when the session uses both. Where a module passed
``--trainer.logger=false`` too, the checkpoint is the same: the logger draws no random numbers (the state
dicts and hyperparameters of both fits were compared, bit for bit, when these fixtures were shared). The
shared run folders are read-only for the tests: a test that writes next to them passes its own
``--trainer.default_root_dir`` (or copies the folder first).

``seq2seq_here`` runs the ``seq2seq`` console script in this process, for commands that only parse, print
help or refuse their arguments (no training, no processes started), so they do not pay a CLI start-up
(5-6 s of imports) each; every command keeps at least one test that runs it in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_cli import CONFIG, ROOT, TINY, seq2seq_together
from tests.test_cli_captioning import CONFIG as CAPTION_CONFIG
from tests.test_cli_captioning import TINY as CAPTION_TINY

#: the tiny fits: fixture -> (config, overrides, run folder name)
TINY_FITS = {
    "tiny_dates_run": (CONFIG, TINY, "tiny-dates"),
    "tiny_shapes_run": (CAPTION_CONFIG, CAPTION_TINY, "tiny-shapes"),
}


@pytest.fixture(scope="session")
def tiny_fits(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The run folder of one of :data:`TINY_FITS` by fixture name. The first request trains every tiny fit the
    session's tests use, started together (on two cores the start-up of one overlaps the other's work)."""
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}

    def run_of(name: str) -> Path:
        if name not in done:
            used = {n for item in request.session.items for n in getattr(item, "fixturenames", ())}
            names = [n for n in TINY_FITS if n not in done and (n == name or n in used)]
            runs = [tmp_path_factory.mktemp(TINY_FITS[n][2]) for n in names]
            procs = seq2seq_together(*(["fit", "-c", str(TINY_FITS[n][0]), *TINY_FITS[n][1],
                                        f"--trainer.default_root_dir={run}"] for n, run in zip(names, runs)),
                                     check=False)
            done.update(zip(names, zip(runs, procs)))
        run, proc = done[name]
        if proc.returncode != 0:
            raise AssertionError(f"seq2seq {' '.join(proc.args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                                 f"{proc.stderr}")
        assert "Example outputs (val)" in proc.stdout  # examples printed at the end of fit
        return run

    return run_of


@pytest.fixture(scope="session")
def tiny_dates_run(tiny_fits: Callable[[str], Path]) -> Path:
    """``seq2seq fit -c configs/translation/dates.yaml`` with :data:`tests.test_cli.TINY` (the config's W&B
    logger, offline): its run folder. Used by test_cli, test_errors, test_cli_constrained, analysis/test_analyze
    and the serving tests, which each trained this same model before."""
    return tiny_fits("tiny_dates_run")


@pytest.fixture(scope="session")
def tiny_shapes_run(tiny_fits: Callable[[str], Path]) -> Path:
    """``seq2seq fit -c configs/captioning/shapes.yaml`` with :data:`tests.test_cli_captioning.TINY` (the
    config's W&B logger, offline): its run folder. Used by test_cli_captioning, test_cli_score and
    serving/test_serve, which each trained this same model before."""
    return tiny_fits("tiny_shapes_run")


Seq2SeqHere = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def seq2seq_here(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Seq2SeqHere:
    """``seq2seq ARGS`` as the console script runs it (``main()`` reading ``sys.argv``), in this process:
    a ``CompletedProcess`` with the exit status and what was written to stdout and stderr. The environment
    is the subprocess helpers' (``WANDB_MODE=offline``, the repository as the working directory, the width
    a pipe gets). Only for commands that end before any training or subprocess: parse errors, ``--help``,
    ``--print_config``, checkpoints refused before anything is built."""
    from seq2seq_lightning.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("COLUMNS", os.environ.get("COLUMNS", "80"))  # a subprocess's stdout is a pipe: 80 wide
    monkeypatch.chdir(ROOT)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", [str(ROOT / "seq2seq_lightning" / "cli.py"), *args])
        capsys.readouterr()  # drop what came before
        code: int = 0
        message = ""
        try:
            main()
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # as the interpreter does: the message on stderr, status 1
                code, message = 1, f"{exc.code}\n"
        out, err = capsys.readouterr()
        proc = subprocess.CompletedProcess(["seq2seq", *args], code, out, err + message)
        if check and code != 0:
            raise AssertionError(f"seq2seq {' '.join(args)} failed ({code}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run
