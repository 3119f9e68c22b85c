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

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class PredictRecord:
    """One predict input read from a line: its source text, and optionally target text every output
    must start with (``prefix``) and phrases every output must contain (``constraints``)."""

    source: str
    prefix: str = ""
    constraints: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LineError:
    """Why a line is not a predict input (a malformed JSON line, say)."""

    message: str


#: line -> the predict input it holds, or why it holds none
LineParser = Callable[[str], PredictRecord | LineError]


def parse_text_line(line: str) -> PredictRecord:
    """A plain-text line is its own source."""
    return PredictRecord(line)


def parse_json_line(line: str) -> PredictRecord | LineError:
    """A JSON-lines predict input: an object with ``"source"`` (string, required), ``"prefix"``
    (string) and ``"constraints"`` (list of strings); other keys are ignored, null is as absent."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return LineError(f"invalid JSON: {exc}")
    if not isinstance(record, dict):
        return LineError(f'expected a JSON object with a string "source", got {type(record).__name__}')
    source, prefix, constraints = record.get("source"), record.get("prefix"), record.get("constraints")
    if source is None:
        return LineError('key "source" is missing')
    if not isinstance(source, str):
        return LineError(f'key "source" is not a string (got {type(source).__name__})')
    if prefix is not None and not isinstance(prefix, str):
        return LineError(f'key "prefix" is not a string (got {type(prefix).__name__})')
    if constraints is not None and not (isinstance(constraints, list) and all(isinstance(c, str) for c in constraints)):
        return LineError('key "constraints" is not a list of strings')
    return PredictRecord(source, prefix or "", list(constraints or []))


def predict_parser(path: str | os.PathLike) -> LineParser:
    """How the lines of a predict input are read: JSON lines for a ``.jsonl`` file (``.jsonl.gz`` too),
    else plain text."""
    return parse_json_line if os.fspath(path).lower().removesuffix(".gz").endswith(".jsonl") else parse_text_line


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
    ``source_text`` (the line's source) and ``target_text`` ``""``; every line gives one row, empty
    lines included. Each batch also has ``truncated``: how many of its rows had more than
    ``max_source_len`` tokens (:class:`PredictLoader` sums these and takes the key out).

    Each line goes through ``parser``. A line it reads as a :class:`PredictRecord` with a prefix or
    constraints gives the batch ``prefix`` / ``constraints`` (target ids); a line it rejects
    (:class:`LineError`) is still a row, in place: an empty source, the raw line as ``source_text``
    and ``errors`` saying "line N of PATH: why".

    Args:
        path: the text file (``.gz`` read through gzip); line rules of :mod:`seq2seq_lightning.data.text`.
        tokenizer: the source tokenizer.
        batch_size: rows per batch.
        max_source_len: most source tokens (EOS not counted); longer lines are cut.
        pad_id: padding id of the batches.
        chunk_batches: a chunk is ``batch_size * chunk_batches`` lines, sorted by length before cutting.
        rank: this process's rank; None reads it from ``torch.distributed`` when iteration starts.
        world_size: the number of processes; None reads it from ``torch.distributed``.
        parser: line -> record or error; None chooses by the file name (:func:`predict_parser`).
        target_tokenizer: encodes prefixes and constraints (needed only when a line has them).
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
        parser: LineParser | None = None,
        target_tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__(path, batch_size, chunk_batches, rank, world_size)
        self.tokenizer, self.target_tokenizer = tokenizer, target_tokenizer
        self.max_source_len, self.pad_id = max_source_len, pad_id
        self.parser = parser if parser is not None else predict_parser(self.path)

    def _records(self, chunk: list[tuple[int, str]]) -> tuple[list[PredictRecord], list[str | None]]:
        """Each line of a chunk as a record (an empty one for a rejected line) and its error or None."""
        records: list[PredictRecord] = []
        errors: list[str | None] = []
        for index, line in chunk:
            parsed = self.parser(line)
            if isinstance(parsed, LineError):
                records.append(PredictRecord(""))
                errors.append(f"line {index + 1} of {self.path}: {parsed.message}")
            else:
                records.append(parsed)
                errors.append(None)
        return records, errors

    def _target_ids(self, records: list[PredictRecord]) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Prefix ids and constraint phrase ids of each record (target tokenizer, no specials)."""
        if not any(r.prefix or r.constraints for r in records):
            return [[] for _ in records], [[] for _ in records]
        if self.target_tokenizer is None:
            raise ValueError(f"{self.path}: a line has a prefix or constraints, but no target tokenizer was given")
        tok = self.target_tokenizer
        return [tok.encode(r.prefix) if r.prefix else [] for r in records], \
            [[ids for ids in tok.encode_batch(r.constraints) if ids] if r.constraints else [] for r in records]

    def _batches(self, chunk: list[tuple[int, str]]) -> Iterator[TextBatch]:
        """Encode a chunk, sort it by length (stable) and cut it into collated batches."""
        eos, limit = self.tokenizer.eos_id, self.max_source_len
        records, errors = self._records(chunk)
        prefixes, constraints = self._target_ids(records)
        encoded = self.tokenizer.encode_batch([r.source for r in records])
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
                        "source_text": chunk[k][1] if errors[k] else records[k].source,
                        "target_text": "",
                    }
                    for k in rows
                ],
                pad_id=self.pad_id,
            )
            batch.truncated = sum(long[k] for k in rows)
            if any(prefixes[k] for k in rows):
                batch.prefix = [prefixes[k] for k in rows]
            if any(constraints[k] for k in rows):
                batch.constraints = [constraints[k] for k in rows]
            if any(errors[k] for k in rows):
                batch.errors = [errors[k] for k in rows]
            yield batch


class PredictLoader(DataLoader):
    """A DataLoader over ready-made batches (``batch_size=None``) that counts truncated rows.

    Runs in the main process: each batch's ``truncated`` count is taken out of the batch and summed,
    and ``on_end(truncated, rows)`` is called once, when the iteration is exhausted; so is
    ``on_malformed(error rows, rows)``, with the rows whose ``errors`` entry is set.

    Args:
        dataset: yields collated batches carrying a ``truncated`` count.
        on_end: called with (truncated rows, all rows) at the end of each complete iteration.
        on_malformed: called with (rows with an error, all rows) at the end of each complete iteration.
        **kwargs: as for :class:`torch.utils.data.DataLoader` (``batch_size`` defaults to None).
    """

    def __init__(self, dataset: Any, *, on_end: Callable[[int, int], None] | None = None,
                 on_malformed: Callable[[int, int], None] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("batch_size", None)
        super().__init__(dataset, **kwargs)
        self.on_end = on_end
        self.on_malformed = on_malformed

    def __iter__(self) -> Iterator[Any]:
        return self._counting(super().__iter__())

    def _counting(self, batches: Iterator[Any]) -> Iterator[Any]:
        truncated = rows = malformed = 0
        for batch in batches:
            truncated += batch.truncated
            batch.truncated = 0  # counted here, once
            rows += len(batch)
            malformed += sum(e is not None for e in getattr(batch, "errors", None) or [])
            yield batch
        if self.on_end is not None:
            self.on_end(truncated, rows)
        if self.on_malformed is not None:
            self.on_malformed(malformed, rows)
