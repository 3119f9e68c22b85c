"""Run commands side by side (the nodes of a job), each in its own session, killed on timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started(commands: list[list[str]], cwds: list[Path] | None = None, env: dict[str, str] = ENV,
            timeout: float = 300, merge_stderr: bool = True) -> Iterator[Callable[[], list[subprocess.CompletedProcess]]]:
    """Start every command at once, each in its own session, and give a callable that waits for all of
    them and returns their results in order (``stdout`` holds stderr too with ``merge_stderr``, else
    ``stderr`` has it). Waiting past ``timeout`` seconds from the start raises an AssertionError. On
    leaving, every session is killed: processes a command left behind (a hung worker), or commands
    still running when the body ended early."""
    cwds = cwds or [ROOT] * len(commands)
    with contextlib.ExitStack() as stack:
        def log() -> IO[str]:
            return stack.enter_context(tempfile.TemporaryFile(mode="w+", encoding="utf-8"))

        logs = [(log(), None if merge_stderr else log()) for _ in commands]
        start = time.monotonic()
        procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err or subprocess.STDOUT,
                                  start_new_session=True) for cmd, cwd, (out, err) in zip(commands, cwds, logs)]
        stack.callback(_kill_sessions, procs)  # before the logs close

        def wait() -> list[subprocess.CompletedProcess]:
            try:
                for proc in procs:
                    proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired as exc:
                raise AssertionError(f"still running after {timeout} s: {exc.cmd}") from exc
            _kill_sessions(procs)
            return [subprocess.CompletedProcess(proc.args, proc.returncode, _read(out), err and _read(err))
                    for proc, (out, err) in zip(procs, logs)]

        yield wait


def _kill_sessions(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()


def run_together(commands: list[list[str]], cwds: list[Path] | None = None,
                 timeout: float = 300) -> tuple[list[int], list[str], float]:
    """Start every command at once (:func:`started`) and wait for all of them; return their exit codes,
    their output (stdout and stderr) and the seconds it took."""
    start = time.monotonic()
    with started(commands, cwds, timeout=timeout) as wait:
        results = wait()
    return [r.returncode for r in results], [r.stdout for r in results], time.monotonic() - start


def cli(*args: str) -> list[str]:
    """The ``seq2seq`` command of this checkout."""
    return [sys.executable, "-m", "seq2seq_lightning.cli", *args]


def torchrun_nodes(nodes: int, *args: str, port: int | None = None) -> list[list[str]]:
    """One torchrun command per node (one process each) on 127.0.0.1, running ``seq2seq ARGS``."""
    port = port or free_port()
    return [[sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1",
             f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
             "-m", "seq2seq_lightning.cli", *args] for rank in range(nodes)]
