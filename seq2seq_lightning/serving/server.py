"""The LitServe server of ``seq2seq serve``: the request guard, ``GET /stats``, and a graceful SIGTERM.

LitServe runs three kinds of processes: this one (it starts the others and waits), the HTTP servers
(uvicorn, forked) and the inference workers (spawned, each with its own copy of the model).
On SIGTERM, :class:`GracefulStop` first stops the HTTP servers the way uvicorn stops on its own
SIGTERM (no new connections; every request in flight is answered, up to ``graceful_timeout``), and only
then lets LitServe take the workers down, as it does on Ctrl+C; the command exits 0.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

import litserve as ls
from fastapi.responses import JSONResponse

from seq2seq_lightning.serving.requests import RequestGuard
from seq2seq_lightning.serving.stats import BatchStats

log = logging.getLogger(__name__)

API_PATH = "/predict"


def build_server(api: ls.LitAPI, *, field: str, max_request_bytes: int, accelerator: str = "auto",
                 workers: int = 1, timeout: float = 30.0, fast_queue: bool = False, stats: BatchStats | None = None,
                 settings: dict[str, Any] | None = None) -> ls.LitServer:
    """A LitServer for ``api`` on ``POST /predict``, with ``GET /health`` (LitServe's) and ``GET /stats``.

    Args:
        api: the LitAPI to serve.
        field: the request field the guard checks (``"source"`` or ``"image"``).
        max_request_bytes: the largest request body; longer ones get 413.
        accelerator: ``"cpu"``, ``"cuda"`` or ``"auto"`` (LitServe's choice).
        workers: inference worker processes per device.
        timeout: seconds a request may wait in the queue before it gets 504.
        fast_queue: answers go back over ZeroMQ (LitServe's ``fast_queue``) instead of a multiprocessing queue.
        stats: the batch counters ``GET /stats`` reports; None leaves the route out.
        settings: extra plain data ``GET /stats`` reports (the serving options).
    """
    guard = (RequestGuard, {"path": API_PATH, "field": field, "max_bytes": max_request_bytes})
    server = ls.LitServer(api, accelerator=accelerator, workers_per_device=workers, timeout=timeout,
                          middlewares=[guard], fast_queue=fast_queue)
    if stats is not None:
        extra = dict(settings or {})

        async def stats_route() -> JSONResponse:
            return JSONResponse({**stats.snapshot(), **extra})

        server.app.add_api_route("/stats", stats_route, methods=["GET"])
    return server


class GracefulStop:
    """SIGTERM handling of the main process: drain the HTTP servers, then shut LitServe down.

    The first SIGTERM starts the drain in a thread; when the HTTP servers are gone, the thread sends
    this process a second SIGTERM, whose handler raises KeyboardInterrupt in the main thread: LitServe's
    own Ctrl+C shutdown (workers, queues) follows and ``run`` returns. (Not SIGINT itself: a process
    started in the background by a shell ignores it.) Further SIGTERMs during the drain are ignored.

    Args:
        timeout: seconds the HTTP servers get to answer the requests in flight.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout, self.pid = timeout, os.getpid()
        self.requested = self.drained = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:  # a forked child that inherited the handler: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.drained:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = True
            threading.Thread(target=self._drain, name="seq2seq-serve-drain", daemon=True).start()

    def _drain(self) -> None:
        servers = [p for p in mp.active_children() if p.name.startswith("LitServer-")]  # LitServe's HTTP servers
        log.info("SIGTERM: answering the requests in flight, then stopping")
        for process in servers:
            os.kill(process.pid, signal.SIGTERM)  # uvicorn: stop accepting, finish what it holds
        deadline = time.monotonic() + self.timeout + 5.0
        for process in servers:
            process.join(max(0.0, deadline - time.monotonic()))
        self.drained = True
        os.kill(self.pid, signal.SIGTERM)  # -> KeyboardInterrupt in the main thread (see _handle)


def run_server(server: ls.LitServer, *, host: str, port: int, graceful_timeout: float = 30.0,
               log_level: str = "info", access_log: bool = False) -> bool:
    """Serve until SIGTERM (or Ctrl+C); True when a SIGTERM stopped it.

    Args:
        server: from :func:`build_server`.
        host: the address to listen on (``127.0.0.1``, ``0.0.0.0`` or ``::``).
        port: the TCP port.
        graceful_timeout: seconds given to requests in flight when stopping.
        log_level: uvicorn's and LitServe's log level.
        access_log: log one line per request.
    """
    stop = GracefulStop(graceful_timeout)
    stop.install()
    server.uvicorn_graceful_timeout = graceful_timeout
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level=log_level, access_log=access_log)
    except KeyboardInterrupt:  # the drain's end arriving before LitServe waits for it (stopped while starting)
        if not stop.requested:
            raise
    return stop.requested
