"""Running `seq2seq serve` as a user runs it, for the serving tests: a real server in a subprocess on
127.0.0.1 (a free port, its own process group), real HTTP clients, and the comparison with predict."""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.test_cli import ROOT

MAX_BYTES = 2048
STARTUP_S = 600  # generous: the machine may be shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    log: Path

    def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("POST", "/predict", body, {"Content-Type": "application/json", **(headers or {})})
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()

    def predict(self, payload: dict) -> tuple[int, dict]:
        return self.post(json.dumps(payload))

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=180)


def launch(ckpt: Path, log: Path, *options: str, threads: int | None = 1) -> Server:
    """Start `seq2seq serve` on a free port of 127.0.0.1 (its own process group, for the clean-up);
    ``threads=None`` leaves --threads to the server's default."""
    port = free_port()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "seq2seq_lightning.cli", "serve", "--ckpt_path", str(ckpt), "--port", str(port),
           "--max_request_bytes", str(MAX_BYTES), *([] if threads is None else ["--threads", str(threads)]), *options]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Server(port, proc, log)


def wait_ready(server: Server) -> Server:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"the server exited ({server.proc.returncode}):\n{server.log.read_text()}"
        try:
            if server.get("/health")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not become ready:\n{server.log.read_text()[-3000:]}")


def clean_up(server: Server) -> None:
    """After a failed test: SIGTERM, then SIGKILL to the server's process group (its workers too)."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


def same_answer(answer: dict, row: dict) -> bool:
    """Whether a served answer has the output and score of predict's JSON line ``row``."""
    if answer["output"] != row["output"]:
        return False
    if row["score"] is None:
        return answer["score"] is None
    return math.isclose(answer["score"], row["score"], rel_tol=1e-5, abs_tol=1e-6)
