"""Run commands side by side (the nodes of a job), each in its own session, killed on timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(commands: list[list[str]], cwds: list[Path] | None = None,
                 timeout: float = 300) -> tuple[list[int], list[str], float]:
    """Start every command at once and wait for all of them; return their exit codes, their output
    (stdout and stderr) and the seconds it took. Each command runs in its own session, which is killed
    when it ends (processes it left behind, such as a hung worker) or when ``timeout`` passes (then
    the test fails)."""
    cwds = cwds or [ROOT] * len(commands)
    logs = [tempfile.TemporaryFile(mode="w+", encoding="utf-8") for _ in commands]  # noqa: SIM115
    start = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
             for cmd, cwd, log in zip(commands, cwds, logs)]
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after {timeout} s: {exc.cmd}") from exc
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    elapsed = time.monotonic() - start
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    return [p.returncode for p in procs], outputs, elapsed


def cli(*args: str) -> list[str]:
    """The ``seq2seq`` command of this checkout."""
    return [sys.executable, "-m", "seq2seq_lightning.cli", *args]


def torchrun_nodes(nodes: int, *args: str, port: int | None = None) -> list[list[str]]:
    """One torchrun command per node (one process each) on 127.0.0.1, running ``seq2seq ARGS``."""
    port = port or free_port()
    return [[sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1",
             f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
             "-m", "seq2seq_lightning.cli", *args] for rank in range(nodes)]
