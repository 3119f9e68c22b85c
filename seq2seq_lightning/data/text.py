"""Reading text corpora robustly: lines, line-aligned parallel files, TSV, and pair filtering.

The line rules are the ones the command line promises for every text input:

- a file whose name ends in ``.gz`` is read through gzip;
- lines are split on ``\\n`` only (never on ``\\r``, form feeds or Unicode line separators);
- a leading byte-order mark and one trailing ``\\r`` per line (CRLF files) are dropped;
- invalid UTF-8 is replaced by U+FFFD rather than raising;
- every line is kept, an empty line as ``""``; a final newline does not add an empty line.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

log = logging.getLogger(__name__)

_BOM = b"\xef\xbb\xbf"
PathLike = str | os.PathLike


def _open_binary(path: PathLike) -> IO[bytes]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _lines(handle: IO[bytes]) -> Iterator[str]:
    with handle:
        first = True
        for raw in handle:  # binary iteration splits on b"\n" only
            if first:
                first = False
                raw = raw.removeprefix(_BOM)
                if not raw:
                    return  # a file holding only a BOM has no lines
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield raw.decode("utf-8", errors="replace")


def iter_lines(path: PathLike) -> Iterator[str]:
    """Stream the lines of ``path`` (rules in the module docstring).

    The file is opened at once, so a missing file raises :class:`FileNotFoundError` naming it here,
    not at the first ``next()``.
    """
    return _lines(_open_binary(path))


def read_lines(path: PathLike) -> list[str]:
    """All lines of ``path`` (rules in the module docstring)."""
    return list(iter_lines(path))


def read_parallel(source_path: PathLike, target_path: PathLike) -> list[tuple[str, str]]:
    """Pairs from two line-aligned files; a differing line count is a :class:`ValueError`."""
    sources = read_lines(source_path)
    targets = read_lines(target_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"parallel files are not line-aligned: {os.fspath(source_path)} has {len(sources)} lines "
            f"but {os.fspath(target_path)} has {len(targets)} lines"
        )
    return list(zip(sources, targets))


def read_tsv(path: PathLike) -> list[tuple[str, str]]:
    """Pairs from ``source<TAB>target`` lines (split at the first tab; the target may hold more tabs).

    A line without a tab is a :class:`ValueError` naming the file and the 1-based line number.
    """
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(iter_lines(path), start=1):
        source, tab, target = line.partition("\t")
        if not tab:
            preview = line if len(line) <= 60 else line[:57] + "..."
            raise ValueError(
                f"{os.fspath(path)}, line {number}: expected 'source<TAB>target', found no tab in {preview!r}"
            )
        pairs.append((source, target))
    return pairs


@dataclass
class FilterResult:
    """What :func:`filter_pairs` kept and why it skipped the rest.

    Unpacks as ``kept_pairs, skipped = filter_pairs(...)``.
    """

    pairs: list[tuple[str, str]]
    indices: list[int]  # position of each kept pair in the input
    skipped: dict[str, int] = field(default_factory=dict)  # reason ("empty", "too_long") -> count

    def __iter__(self) -> Iterator:
        yield self.pairs
        yield self.skipped


def filter_pairs(
    pairs: Sequence[tuple[str, str]],
    max_source_len: int | None = None,
    max_target_len: int | None = None,
    *,
    lengths: Sequence[tuple[int, int]] | None = None,
    length: Callable[[str], int] = len,
    name: str = "training",
) -> FilterResult:
    """Drop pairs with an empty side (after ``strip``) or a side over its maximum length, and count them.

    Lengths are ``lengths[i]`` when given (e.g. token counts computed in one batch), else
    ``length(text)`` (characters by default). A ``None`` maximum means no limit. One warning line
    per reason summarises the counts; ``name`` says which data the pairs are in the log.
    """
    if lengths is not None and len(lengths) != len(pairs):
        raise ValueError(f"got {len(lengths)} lengths for {len(pairs)} pairs")
    kept: list[tuple[str, str]] = []
    indices: list[int] = []
    empty = too_long = 0
    for i, (source, target) in enumerate(pairs):
        if not source.strip() or not target.strip():
            empty += 1
            continue
        source_len, target_len = lengths[i] if lengths is not None else (length(source), length(target))
        if (max_source_len is not None and source_len > max_source_len) or (
            max_target_len is not None and target_len > max_target_len
        ):
            too_long += 1
            continue
        kept.append((source, target))
        indices.append(i)
    if empty:
        log.warning("skipped %d of %d %s pairs: empty source or target", empty, len(pairs), name)
    if too_long:
        log.warning(
            "skipped %d of %d %s pairs: longer than max_source_len=%s or max_target_len=%s",
            too_long,
            len(pairs),
            name,
            max_source_len,
            max_target_len,
        )
    return FilterResult(kept, indices, {"empty": empty, "too_long": too_long})
