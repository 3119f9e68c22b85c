"""Writes predictions to a file: one result per input, in input order, written atomically."""

from __future__ import annotations

import heapq
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter

from seq2seq_lightning.callbacks.shards import DistributedPredictError, ShardSync

ROUNDS = ("start", "visible", "written", "merged")  # where the processes of a distributed predict meet


def format_row(row: dict[str, Any], jsonl: bool) -> str:
    """One output line for a prediction row (no trailing newline)."""
    if jsonl:
        record = {"input": row["input"], "output": row["output"], "score": row["score"], "nbest": row["nbest"]}
        if row.get("error"):
            record["error"] = row["error"]
        return json.dumps(record, ensure_ascii=False)
    return " ".join(str(row["output"]).splitlines())


class PredictionWriter(BasePredictionWriter):
    """Streams prediction rows to ``output`` in input order.

    Rows arrive per batch and may be out of order (length-sorted batches); they wait in a heap
    until every earlier index is written, so memory holds only the reordering window (at most a
    chunk of the streamed input per DataLoader worker), never the whole output. The file is written
    under a temporary name and renamed at the end: an interrupted predict leaves no half file under
    the output name.

    Under DDP, process ``r`` of ``w`` is expected to predict the indices ``r, r + w, r + 2w, ...``
    (how the streamed translation input and Lightning's distributed samplers share the rows). Each
    process writes its rows, in index order, as JSON lines to its own shard; at the end rank 0
    merges the shards by index (a k-way merge that reads one line of each shard at a time) into the
    output. Rows that arrive twice (a padding sampler repeats some) are written once.

    The shards are merged through the output folder, so it must be on a file system every process
    sees at the same path. The processes check that when predict starts (rank 0 must see every
    shard, and the header line with which each process starts its shard, within
    ``min(timeout / 2, 30)`` seconds) and stop at once, naming the shards rank 0 cannot see,
    instead of predicting and failing at the merge. Every wait for the other processes is bounded
    by ``timeout``; a process that fails makes all of them stop with one error that names it
    (:mod:`seq2seq_lightning.callbacks.shards`).

    Args:
        output: the output file; ``.jsonl`` writes JSON lines (input, output, score, nbest), any
            other suffix plain lines.
        formatter: makes a row's output line (no newline) instead of :func:`format_row`; a module-level
            function, so that the writer pickles (``seq2seq score`` writes its rows with one).
        timeout: distributed predict only: the seconds a process waits for the others at each step
            (start, the end of predict, the merge) before it stops with an error naming the processes
            that did not come. The end of predict waits for the slowest process to finish its share.
    """

    def __init__(self, output: str | os.PathLike, formatter: Callable[[dict[str, Any]], str] | None = None,
                 timeout: float = 1800.0) -> None:
        super().__init__(write_interval="batch")
        self.timeout = float(timeout)
        self.output = Path(output)
        self.jsonl = self.output.suffix.lower() == ".jsonl"
        self.formatter = formatter
        self._tmp = self.output.with_name(f".{self.output.name}.partial")
        self._file: TextIO | None = None
        self._heap: list[tuple[int, int, dict[str, Any]]] = []
        self._seq = 0
        self._world, self._rank = 1, 0
        self._expect = 0  # the next index this process will write
        self._last = -1  # the last index it wrote
        self.written = 0  # lines written to the output file
        self._sync: ShardSync | None = None  # the rounds with the other processes (None: one process)
        self._started: list[dict[str, Any]] = []  # every process's status at start: run id, shard, host
        self._statuses: list[dict[str, Any]] = []  # every process's status of the latest round
        self._rounds = 0  # rounds this process has been to
        self._over = True  # no round to come: predict ended (or failed everywhere) or did not start

    def format(self, row: dict[str, Any]) -> str:
        """The output line of a row (no trailing newline)."""
        return self.formatter(row) if self.formatter is not None else format_row(row, self.jsonl)

    @property
    def pending(self) -> int:
        """Rows received but not yet written (waiting for an earlier index)."""
        return len(self._heap)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        # Lightning looks for each batch's indices in a batch sampler, which a streamed input has none
        # of; this writer takes the indices from the rows, so that warning says nothing useful.
        warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")
        self._world = int(getattr(trainer, "world_size", 1))
        self._rank = int(getattr(trainer, "global_rank", 0))
        self._heap, self._seq, self.written = [], 0, 0
        self._expect, self._last = self._rank, -1
        if self._world == 1:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - open across hooks
            return
        # under DDP every process writes its own shard of raw rows; rank 0 merges them at the end
        self._statuses, self._rounds, self._over = [], 0, False
        if dist.is_available() and dist.is_initialized():
            self._sync = ShardSync(self._rank, self._world, self.timeout)
            try:
                self._sync.open()
            except BaseException:
                self._sync, self._over = None, True
                raise
        shard = self._shard(self._rank)
        status: dict[str, Any] = {"run": uuid.uuid4().hex, "shard": str(shard.absolute())}
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(shard, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - open across hooks
            self._file.write(json.dumps({"shard": self._rank, "run": status["run"]}) + "\n")  # the header line
            self._file.flush()
            os.fsync(self._file.fileno())  # on a network file system: on the server for rank 0 to see
        except OSError as exc:
            status["error"] = f"cannot write its shard {shard.absolute()}: {exc}"
        self._round("start", status)
        self._started = self._statuses
        if self._sync is not None:
            self._sync.connect_store(self._started[0]["run"])
        self._round("visible", {"error": self._invisible_shards()} if self._rank == 0 else {})

    def _shard(self, rank: int) -> Path:
        return self.output.with_name(f".{self.output.name}.rank{rank}.partial")

    def _round(self, name: str, status: dict[str, Any]) -> None:
        """Meet the other processes (:meth:`ShardSync.round`); without a process group, check only our own."""
        assert ROUNDS[self._rounds] == name, (ROUNDS[self._rounds], name)
        self._rounds += 1
        try:
            if self._sync is not None:
                self._statuses = self._sync.round(name, status)
            elif status.get("error"):
                raise DistributedPredictError(f"distributed predict failed on rank {self._rank}: {status['error']}")
        except BaseException:
            self._over = True  # failed everywhere, or this process left a round half done: no more rounds
            raise

    def _invisible_shards(self, sizes: bool = False) -> str | None:
        """Rank 0: what is wrong with the shards it sees (None when every shard is there and is the one its
        process wrote, and with ``sizes`` as long as its process wrote it), waiting a little for a network
        file system to show them."""
        if self._sync is None:
            return None  # no statuses to check against; the merge checks that the shards exist
        deadline = time.monotonic() + min(self.timeout / 2, 30.0)
        while True:
            statuses = [{**a, **b} for a, b in zip(self._started, self._statuses)] if sizes else self._started
            problems = [p for s in statuses[1:] if (p := self._shard_problem(s, sizes))]
            if not problems or time.monotonic() > deadline:
                break
            os.listdir(self.output.parent)  # a fresh listing: a network client's cached one may miss the file
            time.sleep(0.2)
        if not problems:
            return None
        return ("the output folder is not shared: " + "; ".join(problems) + ". The shards are merged by rank 0 "
                "through the output folder: put --output on a file system that every node sees at the same path "
                "(and give every process the same --output)")

    def _shard_problem(self, status: dict[str, Any], sizes: bool) -> str | None:
        path = self._shard(status["rank"])
        where = (f"rank {status['rank']} (host {status['host']}) wrote its shard {status['shard']}, but rank 0 "
                 f"(host {self._sync.host if self._sync else '?'}) ")
        try:
            with open(path, encoding="utf-8") as f:
                header = json.loads(f.readline() or "{}")
            size = path.stat().st_size
        except (OSError, ValueError):
            return where + f"cannot read it at {path.absolute()}"
        if header.get("run") != status["run"]:
            return where + f"finds another file at {path.absolute()} (an earlier run's?)"
        if sizes and size != status["bytes"]:
            return where + f"sees {size} of its {status['bytes']} bytes at {path.absolute()}"
        return None

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        assert self._file is not None
        for row in prediction:
            self._seq += 1
            heapq.heappush(self._heap, (int(row["index"]), self._seq, row))
        self._flush()
        if self._sync is not None and not self._over and self._sync.another_failed():
            self._round("written", {"stopped": True})  # the failed process waits there with its error

    def _flush(self, final: bool = False) -> None:
        """Write the rows whose turn has come (all of them, in index order, when ``final``)."""
        assert self._file is not None
        while self._heap and (final or self._heap[0][0] <= self._expect):
            index, _, row = heapq.heappop(self._heap)
            if index <= self._last:
                continue  # a duplicate (a padded distributed sampler repeats rows)
            if self._world == 1:
                self._file.write(self.format(row) + "\n")
                self.written += 1
            else:
                self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._last, self._expect = index, index + self._world

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if self._file is None:
            return
        if self._world == 1:
            self._flush(final=True)
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.output)
            return
        status: dict[str, Any] = {}
        try:
            self._flush(final=True)
            self._file.flush()
            os.fsync(self._file.fileno())
            status["bytes"] = self._file.tell()
            self._file.close()
            self._file = None
        except OSError as exc:
            status["error"] = f"cannot write its shard {self._shard(self._rank).absolute()}: {exc}"
        self._round("written", status)
        merged: dict[str, Any] = {}
        if self._rank == 0:
            try:
                problem = self._invisible_shards(sizes=True)
                if problem:
                    raise DistributedPredictError(problem)
                self._merge_shards()
            except (OSError, ValueError, DistributedPredictError) as exc:
                merged["error"] = f"cannot merge the shards into {self.output.absolute()}: {exc}"
        self._round("merged", merged)
        self._over = True
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def _merge_shards(self) -> None:
        """k-way merge of the per-process shards (each sorted by index, after its header line) into the
        output, streaming, dropping the rows a padded distributed sampler repeated."""
        shards = [self._shard(r) for r in range(self._world)]
        for path in shards:
            if not path.exists():
                raise DistributedPredictError(
                    f"rank 0 cannot find the shard {path.absolute()}: the output folder must be on a file "
                    "system that every process sees at the same path")
        files = [open(p, encoding="utf-8") for p in shards]  # noqa: SIM115 - closed in finally
        try:
            for f in files:
                f.readline()  # the header
            streams = [((int(r["index"]), k, r) for r in map(json.loads, f)) for k, f in enumerate(files)]
            last = -1
            with open(self._tmp, "w", encoding="utf-8", newline="\n") as out:
                for index, _, row in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
                    if index <= last:
                        continue
                    out.write(self.format(row) + "\n")
                    self.written += 1
                    last = index
        finally:
            for f in files:
                f.close()
        os.replace(self._tmp, self.output)
        for p in shards:
            p.unlink(missing_ok=True)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)
        if getattr(self, "_world", 1) > 1:
            self._shard(self._rank).unlink(missing_ok=True)
            if self._sync is not None and not self._over:  # tell the others, and meet them once with the error
                message = f"{type(exception).__name__}: {exception}"
                self._sync.announce_failure(message)
                try:
                    self._round(ROUNDS[self._rounds], {"error": message})
                except DistributedPredictError:
                    pass  # every process now stops; Lightning raises this process's own exception
