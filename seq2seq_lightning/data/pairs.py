"""Pairs to score (``seq2seq score``): an input and a target per line, streamed like predict input.

A pair file is TSV or JSON lines, told by its name (a ``.gz`` ending is read through gzip and not
counted): ``.jsonl`` or ``.json`` is JSON lines, any other name TSV.

- translation: ``source<TAB>target`` (split at the first tab: the target may hold more tabs), or
  ``{"source": ..., "target": ...}``;
- captioning: ``image_path<TAB>caption``, or ``{"image": ..., "caption": ...}``; a relative image path
  is taken from the data module's ``image_root`` or else from the pair file's folder.

Every line gives one row, in a :class:`PairBatch` (which tells the module to score, not search). A
malformed line (a TSV line without a tab, invalid JSON, a JSON line without a string for either
key) and an image that cannot be read are rows too, with their ``errors`` entry set and dummy
tensors, so that the output keeps one line per input line; each batch counts its malformed lines
in ``malformed`` and :class:`PairLoader` sums them. Chunks are sorted by length before they are cut
into batches, as predict input is (:mod:`seq2seq_lightning.data.predict_stream`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from seq2seq_lightning.data.batch import Batch, ImageBatch, TextBatch
from seq2seq_lightning.data.caption_formats import normalize_caption
from seq2seq_lightning.data.images import ImageLoadError, ImageTransform, load_image
from seq2seq_lightning.data.predict_stream import LineStream, PredictLoader
from seq2seq_lightning.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

TEXT_KEYS = ("source", "target")
IMAGE_KEYS = ("image", "caption")


def is_json_lines(path: str | os.PathLike) -> bool:
    """Whether a pair file is JSON lines (``.jsonl``/``.json``, before any ``.gz``) rather than TSV."""
    name = os.fspath(path).lower().removesuffix(".gz")
    return name.endswith((".jsonl", ".json"))


def parse_pair(line: str, json_lines: bool, keys: tuple[str, str] = TEXT_KEYS) -> tuple[str, str]:
    """One line of a pair file -> (input, target); a malformed line raises ValueError saying why."""
    if not json_lines:
        if "\t" not in line:
            raise ValueError(f"no tab between {keys[0]} and {keys[1]}")
        first, second = line.split("\t", 1)
        return first, second
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(record, dict):
        raise ValueError(  # noqa: TRY004 - a malformed line, not a wrong argument
            f"expected a JSON object with string {keys[0]!r} and {keys[1]!r}, got {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise ValueError(f"key {key!r} is missing")
        if not isinstance(record[key], str):
            raise ValueError(f"key {key!r} is not a string (got {type(record[key]).__name__})")  # noqa: TRY004
    return record[keys[0]], record[keys[1]]


@dataclass(kw_only=True)
class PairBatch(Batch):
    """A batch of pairs to score: ``target`` holds the given targets. Its type is what tells a
    module's ``predict_step`` to score rather than search.

    Attributes:
        errors: per row, why it cannot be scored (a malformed line, an unreadable image), or None.
        malformed: rows of this batch whose line was malformed (:class:`PairLoader` sums these).
    """

    errors: list[str | None] = field(default_factory=list)
    malformed: int = 0


@dataclass(kw_only=True)
class TextPairBatch(PairBatch, TextBatch):
    """Source and target token sequences (translation pairs)."""


@dataclass(kw_only=True)
class ImagePairBatch(PairBatch, ImageBatch):
    """Images and captions (captioning pairs)."""

    truncated: int = 0  # captions are never cut; the predict loader reads the count


class _PairStream(LineStream):
    """Parses each chunk's lines into pairs (or errors), then hands them to :meth:`_make`."""

    keys: tuple[str, str] = TEXT_KEYS

    def _parsed(self, chunk: list[tuple[int, str]]) -> list[tuple[int, str, str, str | None]]:
        json_lines = is_json_lines(self.path)
        rows = []
        for index, line in chunk:
            try:
                first, second = parse_pair(line, json_lines, self.keys)
                rows.append((index, first, second, None))
            except ValueError as exc:
                rows.append((index, "", "", f"line {index + 1} of {self.path}: {exc}"))
        return rows


class TextPairStream(_PairStream):
    """Translation pairs of ``path`` as :class:`TextPairBatch` es.

    A row is ``index`` (0-based line number), ``source`` (ids[:max_source_len] + EOS, cut as predict
    cuts it), ``target`` (``[BOS, ids..., EOS]``, never cut: a cut target would be another sentence),
    ``source_text`` and ``target_text`` (the pair's texts) and ``errors``.

    Args:
        path: the pair file (TSV or JSON lines, module docstring).
        source_tokenizer: the source tokenizer.
        target_tokenizer: the target tokenizer.
        batch_size: rows per batch.
        max_source_len: most source tokens (EOS not counted); longer sources are cut and counted.
        pad_id: padding id of the batches.
        chunk_batches: a chunk is ``batch_size * chunk_batches`` lines, sorted by length before cutting.
        rank: this process's rank; None reads it from ``torch.distributed``.
        world_size: the number of processes; None reads it from ``torch.distributed``.
    """

    def __init__(self, path: str | os.PathLike, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer,
                 batch_size: int, max_source_len: int | None, pad_id: int, chunk_batches: int = 64,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(path, batch_size, chunk_batches, rank, world_size)
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.max_source_len, self.pad_id = max_source_len, pad_id

    def _batches(self, chunk: list[tuple[int, str]]) -> Iterator[TextPairBatch]:
        rows = self._parsed(chunk)
        src, tgt, limit = self.source_tokenizer, self.target_tokenizer, self.max_source_len
        sources = src.encode_batch([r[1] for r in rows])
        targets = tgt.encode_batch([r[2] for r in rows])
        long = [r[3] is None and limit is not None and len(ids) > limit for r, ids in zip(rows, sources)]
        sources = [ids if limit is None else ids[:limit] for ids in sources]
        order = sorted(range(len(rows)), key=lambda k: (len(sources[k]), len(targets[k])))
        for start in range(0, len(order), self.batch_size):
            picked = order[start : start + self.batch_size]
            source = [torch.tensor(sources[k] + [src.eos_id], dtype=torch.long) for k in picked]
            target = [torch.tensor([tgt.bos_id, *targets[k], tgt.eos_id], dtype=torch.long) for k in picked]
            errors = [rows[k][3] for k in picked]
            yield TextPairBatch(
                source=pad_sequence(source, batch_first=True, padding_value=self.pad_id),  # (B, S)
                source_lengths=torch.tensor([len(s) for s in source], dtype=torch.long),  # (B,)
                target=pad_sequence(target, batch_first=True, padding_value=tgt.pad_id),  # (B, T)
                target_lengths=torch.tensor([len(t) for t in target], dtype=torch.long),  # (B,)
                index=torch.tensor([rows[k][0] for k in picked], dtype=torch.long),  # (B,)
                source_text=[rows[k][1] for k in picked], target_text=[rows[k][2] for k in picked],
                errors=errors, malformed=sum(e is not None for e in errors), truncated=sum(long[k] for k in picked))


class ImagePairStream(_PairStream):
    """Captioning pairs of ``path`` as :class:`ImagePairBatch` es, images read as batches are made.

    A row is ``index`` (0-based line number), ``images`` (the transformed image; zeros where it cannot
    be read, with the reason in ``errors``), ``target`` (``[BOS, ids..., EOS]`` of the normalised
    caption, never cut), ``source_text`` (the image path as given) and ``target_text`` (the caption).

    Args:
        path: the pair file (TSV or JSON lines, module docstring).
        tokenizer: the caption tokenizer.
        transform: how images are prepared (the model's evaluation transform).
        batch_size: rows per batch.
        image_root: the folder relative image paths are taken from; None: the pair file's folder.
        lowercase: lowercase captions while normalising them (as the data module does its references).
        chunk_batches: a chunk is ``batch_size * chunk_batches`` lines, sorted by caption length.
        rank: this process's rank; None reads it from ``torch.distributed``.
        world_size: the number of processes; None reads it from ``torch.distributed``.
    """

    keys = IMAGE_KEYS

    def __init__(self, path: str | os.PathLike, tokenizer: Tokenizer, transform: ImageTransform, batch_size: int,
                 image_root: str | os.PathLike | None = None, lowercase: bool = True, chunk_batches: int = 64,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(path, batch_size, chunk_batches, rank, world_size)
        self.tokenizer, self.transform, self.lowercase = tokenizer, transform, lowercase
        self.image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(self.path)

    def _image(self, path: str) -> tuple[torch.Tensor | None, str | None]:
        """(3, H, W) float, or None and why it cannot be read."""
        if not path.strip():
            return None, "no image path"
        full = path if os.path.isabs(path) else os.path.join(self.image_root, path)
        try:
            return self.transform(load_image(full, draft_size=self.transform.size)), None
        except ImageLoadError as exc:
            return None, f"unreadable image: {exc}"

    def _batches(self, chunk: list[tuple[int, str]]) -> Iterator[ImagePairBatch]:
        rows = self._parsed(chunk)
        tok = self.tokenizer
        captions = [normalize_caption(r[2], self.lowercase) for r in rows]
        targets = tok.encode_batch(captions)
        order = sorted(range(len(rows)), key=lambda k: len(targets[k]))
        for start in range(0, len(order), self.batch_size):
            picked = order[start : start + self.batch_size]
            errors = [rows[k][3] for k in picked]
            malformed = sum(e is not None for e in errors)
            images: list[torch.Tensor | None] = []
            for j, k in enumerate(picked):
                image, error = (None, None) if errors[j] is not None else self._image(rows[k][1])
                images.append(image)
                errors[j] = errors[j] or (f"line {rows[k][0] + 1} of {self.path}: {error}" if error else None)
            shape = next((x.shape for x in images if x is not None), None)
            target = [torch.tensor([tok.bos_id, *targets[k], tok.eos_id], dtype=torch.long) for k in picked]
            yield ImagePairBatch(
                images=None if shape is None else torch.stack(
                    [x if x is not None else torch.zeros(shape) for x in images]),  # (B, 3, H, W)
                target=pad_sequence(target, batch_first=True, padding_value=tok.pad_id),  # (B, T)
                target_lengths=torch.tensor([len(t) for t in target], dtype=torch.long),  # (B,)
                index=torch.tensor([rows[k][0] for k in picked], dtype=torch.long),  # (B,)
                source_text=[rows[k][1] for k in picked], target_text=[rows[k][2] for k in picked],
                references=[[captions[k]] for k in picked], errors=errors, malformed=malformed)


class PairLoader(PredictLoader):
    """The predict loader over a pair stream; also counts the rows that cannot be scored.

    Args:
        dataset: a :class:`TextPairStream` or :class:`ImagePairStream`.
        on_errors: called with (malformed lines, all error rows, all rows) at the end of each complete
            iteration (error rows: malformed lines and unreadable images).
        **kwargs: as for :class:`~seq2seq_lightning.data.predict_stream.PredictLoader`.
    """

    def __init__(self, dataset: Any, *, on_errors: Callable[[int, int, int], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.on_errors = on_errors

    def __iter__(self) -> Iterator[Any]:
        return self._tallying(super().__iter__())

    def _tallying(self, batches: Iterator[Any]) -> Iterator[Any]:
        malformed = errors = rows = 0
        for batch in batches:
            malformed += batch.malformed
            batch.malformed = 0  # counted here, once
            errors += sum(e is not None for e in batch.errors)
            rows += len(batch)
            yield batch
        if self.on_errors is not None:
            self.on_errors(malformed, errors, rows)


def warn_errors(path: str, malformed: int, errors: int, rows: int) -> None:
    """The warning at the end of a scoring pass with rows that could not be scored."""
    if malformed:
        log.warning("%d of %d lines malformed in %s (each has an error row in the output)", malformed, rows, path)
    if errors > malformed:
        log.warning("%d of %d images unreadable in %s (each has an error row in the output)", errors - malformed,
                    rows, path)


@contextmanager
def reading_pairs(datamodule: Any) -> Iterator[None]:
    """Within the block, ``datamodule``'s predict split reads pairs to score (its ``scoring`` flag);
    the predict dataset is built afresh on entry and dropped on exit."""
    if datamodule is None or not hasattr(datamodule, "scoring"):
        name = type(datamodule).__name__ if datamodule is not None else "no data module"
        raise ValueError(f"{name} cannot read pairs to score (a data module with a 'scoring' flag can: "
                         "TranslationDataModule, CaptioningDataModule)")
    datasets = getattr(datamodule, "datasets", {})
    datasets.pop("predict", None)
    datamodule.scoring = True
    try:
        yield
    finally:
        datamodule.scoring = False
        datasets.pop("predict", None)
