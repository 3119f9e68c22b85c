"""How an inference worker collects requests into a batch: start when the first one arrives.

LitServe's batched loop (which runs ``decode_request -> batch -> predict -> unbatch -> encode_response``
for each batch) collects a batch by polling its queue for ``batch_timeout`` seconds from whenever the
worker is free, whether requests come or not; with ``batch_timeout=0`` the idle worker spins. This
loop keeps LitServe's batch processing and changes only the collection (its
``get_batch_requests`` method): it blocks while the queue is empty, takes the first request as soon as
it arrives, then every request already queued, then waits at most ``batch_timeout`` for more, up to
``max_batch_size``. Requests that arrive while a batch is decoded form the next one, so batches grow
with the load and a lone request is decoded at once (``batch_timeout=0``) or nearly so.
"""

from __future__ import annotations

import time
from queue import Empty, Queue
from typing import Any

import litserve as ls
from litserve.loops.simple_loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType

#: what LitServe puts in a request queue to stop a worker
SENTINEL = (None, None, None, None)


class PromptBatchLoop(BatchedLoop):
    """LitServe's batched loop, collecting each batch from the arrival of its first request."""

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Queue, transport: Any) -> tuple[list, list]:
        """``(payloads, timed_out)``: up to ``max_batch_size`` requests as ``(response queue id, uid,
        body)``, and the ``(response queue id, uid)`` of those that waited longer than the server's timeout.
        Both are empty when nothing arrived within a second (the loop then asks again)."""
        payloads: list[tuple] = []
        timed_out: list[tuple] = []
        try:
            item = request_queue.get(timeout=1.0)  # blocks while the server is idle: no polling
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + lit_api.batch_timeout
        while True:
            self._take(item, lit_api, transport, payloads, timed_out)
            if len(payloads) + len(timed_out) >= lit_api.max_batch_size:
                break
            try:
                item = request_queue.get_nowait()
            except Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = request_queue.get(timeout=remaining)
                except Empty:
                    break
        return payloads, timed_out

    def _take(self, item: tuple, lit_api: ls.LitAPI, transport: Any, payloads: list, timed_out: list) -> None:
        """Sort one queued request into ``payloads`` or ``timed_out`` (a stop sentinel ends the worker)."""
        if item == SENTINEL:
            raise SystemExit(0)
        response_queue_id, uid, timestamp, body = item
        self.put_response(transport=transport, response_queue_id=response_queue_id, uid=uid, response_data=(),
                          status=LitAPIStatus.START, response_type=LoopResponseType.REGULAR)
        timeout = lit_api.request_timeout
        if timeout not in (None, -1, False) and time.monotonic() - timestamp > timeout:
            timed_out.append((response_queue_id, uid))
        else:
            payloads.append((response_queue_id, uid, body))
