"""Predict input as a stream: a file of any size is read, tokenized and batched a chunk at a time.

Memory holds one chunk of lines per DataLoader worker, never the whole input, so predicting on a
million lines takes as much memory as predicting on a thousand. Each chunk is sorted by token length
before it is cut into batches (less padding, fewer distinct length limits per search); every row
carries its line number (``index``), and the prediction writer puts the results back in input order.
:class:`LineStream` is the reading and sharding; :class:`StreamingPredictDataset` makes translation
inputs of its chunks, and other line formats (the pairs ``seq2seq score`` reads) subclass it too.

Sharding, so that every line is read by each process but encoded and predicted by exactly one:

- across distributed processes, line ``i`` belongs to rank ``i % world_size`` (the order Lightning's
  distributed samplers give map-style datasets, and the one the prediction writer expects);
- within a process, its own lines form chunks of ``batch_size * chunk_batches`` lines, and chunk ``k``
  goes to DataLoader worker ``k % num_workers``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from seq2seq_lightning.data.batch import TextBatch
from seq2seq_lightning.data.batching import collate_translation
from seq2seq_lightning.data.text import iter_lines
from seq2seq_lightning.data.tokenizer import Tokenizer


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class LineStream(IterableDataset):
    """The lines of ``path``, sharded and read a chunk at a time; a subclass turns each chunk into batches.

    Every process reads every line; its own lines (module docstring) form chunks of
    ``batch_size * chunk_batches`` ``(index, line)`` pairs, which :meth:`_batches` makes batches of
    (each batch's rows carrying their line numbers in ``index``).

    Args:
        path: the text file (``.gz`` read through gzip); line rules of :mod:`seq2seq_lightning.data.text`.
        batch_size: rows per batch.
        chunk_batches: a chunk is ``batch_size * chunk_batches`` lines.
        rank: this process's rank; None reads it from ``torch.distributed`` when iteration starts.
        world_size: the number of processes; None reads it from ``torch.distributed``.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int, chunk_batches: int = 64, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError(f"batch_size and chunk_batches must be positive, got {batch_size}, {chunk_batches}")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
        self.path = path
        self.batch_size, self.chunk_batches = batch_size, chunk_batches
        self.rank, self.world_size = rank, world_size

    def shard(self) -> tuple[int, int, int, int]:
        """(rank, world size, worker id, workers) of the iteration running here."""
        rank, world = _distributed()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world size {world}")
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return rank, world, worker, workers

    def __iter__(self) -> Iterator[Any]:
        rank, world, worker, workers = self.shard()
        chunk_size = self.batch_size * self.chunk_batches
        chunk: list[tuple[int, str]] = []
        own = 0  # lines of this rank seen so far
        for index, line in enumerate(iter_lines(self.path)):
            if index % world != rank:
                continue
            if (own // chunk_size) % workers == worker:
                chunk.append((index, line))
                if len(chunk) == chunk_size:
                    yield from self._batches(chunk)
                    chunk = []
            own += 1
        if chunk:
            yield from self._batches(chunk)

    def _batches(self, chunk: list[tuple[int, str]]) -> Iterator[Any]:
        """The batches of one chunk of ``(line number, line)`` pairs."""
        raise NotImplementedError


class StreamingPredictDataset(LineStream):
    """Lines of ``path`` as padded predict batches (the :class:`TextBatch` :func:`collate_translation` makes).

    A row is ``index`` (line number, 0-based), ``source`` (ids[:max_source_len] + EOS), no target,
    ``source_text`` (the line) and ``target_text`` ``""``; every line gives one row, empty lines
    included. Each batch also has ``truncated``: how many of its rows had more than
    ``max_source_len`` tokens (:class:`PredictLoader` sums these and takes the key out).

    Args:
        path: the text file (``.gz`` read through gzip); line rules of :mod:`seq2seq_lightning.data.text`.
        tokenizer: the source tokenizer.
        batch_size: rows per batch.
        max_source_len: most source tokens (EOS not counted); longer lines are cut.
        pad_id: padding id of the batches.
        chunk_batches: a chunk is ``batch_size * chunk_batches`` lines, sorted by length before cutting.
        rank: this process's rank; None reads it from ``torch.distributed`` when iteration starts.
        world_size: the number of processes; None reads it from ``torch.distributed``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tokenizer: Tokenizer,
        batch_size: int,
        max_source_len: int | None,
        pad_id: int,
        chunk_batches: int = 64,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, chunk_batches, rank, world_size)
        self.tokenizer = tokenizer
        self.max_source_len, self.pad_id = max_source_len, pad_id

    def _batches(self, chunk: list[tuple[int, str]]) -> Iterator[TextBatch]:
        """Encode a chunk, sort it by length (stable) and cut it into collated batches."""
        eos, limit = self.tokenizer.eos_id, self.max_source_len
        encoded = self.tokenizer.encode_batch([line for _, line in chunk])
        cut = [ids if limit is None else ids[:limit] for ids in encoded]
        long = [limit is not None and len(ids) > limit for ids in encoded]
        order = sorted(range(len(chunk)), key=lambda k: len(cut[k]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = collate_translation(
                [
                    {
                        "index": chunk[k][0],
                        "source": torch.tensor(cut[k] + [eos], dtype=torch.long),
                        "target": None,
                        "source_text": chunk[k][1],
                        "target_text": "",
                    }
                    for k in rows
                ],
                pad_id=self.pad_id,
            )
            batch.truncated = sum(long[k] for k in rows)
            yield batch


class PredictLoader(DataLoader):
    """A DataLoader over ready-made batches (``batch_size=None``) that counts truncated rows.

    Runs in the main process: each batch's ``truncated`` count is taken out of the batch and summed,
    and ``on_end(truncated, rows)`` is called once, when the iteration is exhausted.

    Args:
        dataset: yields collated batches carrying a ``truncated`` count.
        on_end: called with (truncated rows, all rows) at the end of each complete iteration.
        **kwargs: as for :class:`torch.utils.data.DataLoader` (``batch_size`` defaults to None).
    """

    def __init__(self, dataset: Any, *, on_end: Callable[[int, int], None] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("batch_size", None)
        super().__init__(dataset, **kwargs)
        self.on_end = on_end

    def __iter__(self) -> Iterator[Any]:
        return self._counting(super().__iter__())

    def _counting(self, batches: Iterator[Any]) -> Iterator[Any]:
        truncated = rows = 0
        for batch in batches:
            truncated += batch.truncated
            batch.truncated = 0  # counted here, once
            rows += len(batch)
            yield batch
        if self.on_end is not None:
            self.on_end(truncated, rows)
