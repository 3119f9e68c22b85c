"""How the processes of a distributed predict agree on their output shards, with bounded waits.

Every process writes its rows to its own shard next to the output; rank 0 merges the shards.
Between those steps the processes meet in *rounds*: each round is a ``monitored_barrier`` on a
gloo group of their own, whose timeout bounds the wait, then an ``all_gather_object`` of one
status per process. A status with an ``error`` ends the run on every process with one
:class:`DistributedPredictError` naming the failed ranks, their hosts and their errors; a process
that does not come within the timeout is named by the barrier. The rounds of
:class:`~seq2seq_lightning.callbacks.writer.PredictionWriter` are ``start`` (each shard opened),
``visible`` (rank 0 sees every shard), ``written`` (every shard complete) and ``merged``.

A process that fails while the others still predict says so in the job's key-value store (the
``TCPStore`` at ``MASTER_ADDR:MASTER_PORT``, which torchrun, SLURM and Lightning's own launcher
all set up); the others look at most once a second between batches and stop early instead of
finishing their share first.
"""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist

POLL_SECONDS = 1.0  # how often a process looks for another's failure between batches


class DistributedPredictError(RuntimeError):
    """A distributed predict stopped: a process failed, did not come in time, or a shard was not visible."""


def _missing_ranks(message: str) -> str | None:
    """The ranks a failed ``monitored_barrier`` names (rank 0 names the others; the others name rank 0)."""
    found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", message)
    if found:
        return found.group(1).strip(" ,")
    return "0" if "from rank 0" in message else None


class ShardSync:
    """The rounds of one distributed predict (on one process).

    Args:
        rank: this process's global rank.
        world: the number of processes.
        timeout: seconds a process waits in a round for the others before it fails.
    """

    def __init__(self, rank: int, world: int, timeout: float) -> None:
        self.rank, self.world, self.timeout = rank, world, float(timeout)
        self.host = socket.gethostname()
        self.group: Any = None
        self.store: Any = None
        self.prefix = ""
        self._checked = 0.0

    def open(self) -> None:
        """The gloo group of the rounds (every process calls this, like any collective)."""
        try:
            self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout))
        except RuntimeError as exc:
            raise DistributedPredictError(
                f"distributed predict: rank {self.rank} ({self.host}) could not reach every process within "
                f"{self.timeout:g} s to start writing the output: {exc}") from exc

    def connect_store(self, run: str) -> None:
        """The job's key-value store, for early failure notices (none when the job has no TCP store)."""
        self.prefix = f"seq2seq_lightning/predict/{run}"
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not addr or not port:
            return
        try:
            self.store = dist.TCPStore(addr, int(port), is_master=False, wait_for_workers=False,
                                       timeout=timedelta(seconds=min(self.timeout, 30.0)))
        except (RuntimeError, ValueError):
            self.store = None  # no notices: a failed process is then seen at the next round

    def announce_failure(self, message: str) -> None:
        """Tell the others that this process failed (they stop at their next check)."""
        if self.store is None:
            return
        try:
            self.store.set(f"{self.prefix}/error/{self.rank}", message)
            self.store.add(f"{self.prefix}/failed", 1)
        except RuntimeError:
            pass  # the store is gone: the next round reports the failure

    def another_failed(self) -> bool:
        """Whether another process announced a failure (asks the store at most once per ``POLL_SECONDS``)."""
        now = time.monotonic()
        if self.store is None or now - self._checked < POLL_SECONDS:
            return False
        self._checked = now
        try:
            return self.store.add(f"{self.prefix}/failed", 0) > 0
        except RuntimeError:
            return False

    def round(self, name: str, status: dict[str, Any]) -> list[dict[str, Any]]:
        """Meet the other processes; return every process's status, or raise if any reports an error.

        ``status`` may hold ``error`` (this process failed: the text is shown) or ``stopped`` (it stopped
        because another failed). Host and pid are added.
        """
        status = {**status, "rank": self.rank, "host": self.host, "pid": os.getpid()}
        self._arrive(name)
        try:
            dist.monitored_barrier(group=self.group, timeout=timedelta(seconds=self.timeout), wait_all_ranks=True)
            statuses: list[Any] = [None] * self.world
            dist.all_gather_object(statuses, status, group=self.group)
        except RuntimeError as exc:
            ranks = _missing_ranks(str(exc)) or self._absent(name)
            who = f"rank {ranks}" if ranks else "a process"
            raise DistributedPredictError(
                f"distributed predict: {who} did not come to the {name!r} step within {self.timeout:g} s "
                f"(--sync_timeout), or is gone (crashed or killed before it could report). Rank {self.rank} "
                f"(host {self.host}) saw: {exc}") from exc
        failed = [s for s in statuses if s.get("error")]
        if failed:
            raise DistributedPredictError(
                "distributed predict failed on "
                + "; ".join(f"rank {s['rank']} (host {s['host']}, pid {s['pid']}): {s['error']}" for s in failed))
        if any(s.get("stopped") for s in statuses):
            raise DistributedPredictError("distributed predict: stopped after another process failed")
        return statuses

    def _arrive(self, name: str) -> None:
        """Note in the store that this process came to round ``name`` (so that a failed round can name who did
        not come, even when the barrier's error names no rank)."""
        if self.store is not None:
            try:
                self.store.set(f"{self.prefix}/{name}/{self.rank}", "1")
            except RuntimeError:
                pass

    def _absent(self, name: str) -> str | None:
        """The ranks that did not note their arrival at round ``name`` (None when that cannot be told)."""
        if self.store is None:
            return None
        try:
            absent = [r for r in range(self.world) if not self.store.check([f"{self.prefix}/{name}/{r}"])]
        except RuntimeError:
            return None
        return ", ".join(map(str, absent)) or None

    def close(self) -> None:
        if self.group is not None and dist.is_initialized():
            try:
                dist.destroy_process_group(self.group)
            except (RuntimeError, ValueError):
                pass
        self.group, self.store = None, None
