"""Typed batches: what a task's loader yields and its module reads, field by field.

Lightning moves every tensor field to the module's device (dataclasses are collections to it). A new
task subclasses :class:`Batch` with its own input fields, or reuses :class:`TextBatch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass(kw_only=True)
class Batch:
    """The fields every task's batch has.

    Attributes:
        index: (B,) long, each row's position in its split or input file (predict output order).
        target: (B, T) long, ``[BOS, ..., EOS]`` padded with the pad id; None without references.
        target_lengths: (B,) long, or None without references.
        source_text: what each row reads, as text (the source sentence; an image's path or id).
        target_text: the reference each target encodes ("" where there is none).
    """

    index: Tensor
    target: Tensor | None = None
    target_lengths: Tensor | None = None
    source_text: list[str] = field(default_factory=list)
    target_text: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.numel())

    def rows(self, rows: Sequence[int]) -> Self:
        """The sub-batch of ``rows``: tensors indexed on their first dimension, lists picked, the
        rest (counts) kept."""
        picked: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.dim() > 0:
                value = value.index_select(0, torch.as_tensor(list(rows), dtype=torch.long, device=value.device))
            elif isinstance(value, list):
                value = [value[i] for i in rows]
            picked[f.name] = value
        return dataclasses.replace(self, **picked)


@dataclass(kw_only=True)
class TextBatch(Batch):
    """A batch of token sequences (translation).

    Attributes:
        source: (B, S) long, token ids ending in EOS, padded with the pad id.
        source_lengths: (B,) long.
        truncated: rows whose source was cut to the longest allowed length (predict streams count it).
        prefix: per row, target token ids (no BOS/EOS) every output must start with ([]: none), or
            None when no row has one; the module's search forces them.
        constraints: per row, phrases of target token ids (no BOS/EOS) every output must contain
            ([]: none), or None when no row has any; searched with a strategy that takes them
            (``constrained_beam``).
        errors: per row, why its input could not be read (a malformed JSON line), or None; such a row
            gets an empty output carrying the error. None when every row was read.
    """

    source: Tensor
    source_lengths: Tensor
    truncated: int = 0
    prefix: list[list[int]] | None = None
    constraints: list[list[list[int]]] | None = None
    errors: list[str | None] | None = None


@dataclass(kw_only=True)
class ImageBatch(Batch):
    """A batch of images (captioning).

    Attributes:
        images: (B, 3, H, W) float, normalised; None when no image of the batch could be read.
        references: every reference caption of each row.
        skipped: unreadable images dropped from this batch (training and evaluation).
        errors: per row, why its image could not be read, or None (predict keeps such rows, with a
            zero image); None outside predict.
    """

    images: Tensor | None = None
    references: list[list[str]] = field(default_factory=list)
    skipped: int = 0
    errors: list[str | None] | None = None
