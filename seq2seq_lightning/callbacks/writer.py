"""Writes predictions to a file: one result per input, in input order, written atomically."""

from __future__ import annotations

import heapq
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from lightning.pytorch.callbacks import BasePredictionWriter


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

    Args:
        output: the output file; ``.jsonl`` writes JSON lines (input, output, score, nbest), any
            other suffix plain lines.
        formatter: makes a row's output line (no newline) instead of :func:`format_row`; a module-level
            function, so that the writer pickles (``seq2seq score`` writes its rows with one).
    """

    def __init__(self, output: str | os.PathLike, formatter: Callable[[dict[str, Any]], str] | None = None) -> None:
        super().__init__(write_interval="batch")
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
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._world = int(getattr(trainer, "world_size", 1))
        self._rank = int(getattr(trainer, "global_rank", 0))
        # under DDP every process writes its own shard of raw rows; rank 0 merges them at the end
        path = self._tmp if self._world == 1 else self._shard(self._rank)
        self._file = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - open across hooks
        self._heap, self._seq, self.written = [], 0, 0
        self._expect, self._last = self._rank, -1

    def _shard(self, rank: int) -> Path:
        return self.output.with_name(f".{self.output.name}.rank{rank}.partial")

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        assert self._file is not None
        for row in prediction:
            self._seq += 1
            heapq.heappush(self._heap, (int(row["index"]), self._seq, row))
        self._flush()

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
        self._flush(final=True)
        self._file.close()
        self._file = None
        if self._world == 1:
            os.replace(self._tmp, self.output)
            return
        trainer.strategy.barrier("prediction-shards-written")
        if self._rank == 0:
            self._merge_shards()
        trainer.strategy.barrier("prediction-merged")

    def _merge_shards(self) -> None:
        """k-way merge of the per-process shards (each sorted by index) into the output, streaming,
        dropping the rows a padded distributed sampler repeated."""
        shards = [self._shard(r) for r in range(self._world)]
        files = [open(p, encoding="utf-8") for p in shards]  # noqa: SIM115 - closed in finally
        try:
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
