"""Counts of the batches the inference workers decoded, shared with the HTTP processes (``GET /stats``)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


class BatchStats:
    """How many batches of each size were searched, and how many requests were answered without a search.

    The counters live in shared memory created before the workers start: the inference workers
    (spawned) get them with the API object, the HTTP servers (forked) inherit them, so ``GET /stats``
    reports what the workers did. A batch's size is the number of rows of its one ``search``.

    Args:
        max_batch_size: the largest batch a worker forms.
    """

    def __init__(self, max_batch_size: int) -> None:
        ctx = mp.get_context("spawn")
        self.max_batch_size = max_batch_size
        self._sizes = ctx.Array("q", max_batch_size + 1)  # [n]: batches whose search had n rows
        self._unsearched = ctx.Array("q", 2)  # [0]: empty inputs, [1]: rejected inputs (answered without search)

    def record(self, searched: int, empty: int = 0, rejected: int = 0) -> None:
        """One batch: ``searched`` rows went through one search; ``empty`` and ``rejected`` did not."""
        with self._sizes.get_lock():
            if searched:
                self._sizes[min(searched, self.max_batch_size)] += 1
            self._unsearched[0] += empty
            self._unsearched[1] += rejected

    def snapshot(self) -> dict[str, Any]:
        """``{"batches", "searched", "empty", "rejected", "batch_sizes": {size: count}, "mean_batch_size",
        "max_batch_size"}``; sizes that never occurred are left out."""
        with self._sizes.get_lock():
            sizes = list(self._sizes)
            empty, rejected = list(self._unsearched)
        batches = sum(sizes)
        searched = sum(n * c for n, c in enumerate(sizes))
        return {"batches": batches, "searched": searched, "empty": empty, "rejected": rejected,
                "batch_sizes": {str(n): c for n, c in enumerate(sizes) if c},
                "mean_batch_size": round(searched / batches, 3) if batches else None,
                "max_batch_size": self.max_batch_size}
