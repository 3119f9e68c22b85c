"""A DataLoader that resumes inside an epoch and leaves the global random state alone.

Lightning saves ``state_dict()`` of every training loader in each checkpoint and hands it back to
``load_state_dict()`` on resume. The state is the epoch and the number of batches the training loop
has consumed in it (read from the trainer, so batches the loop fetched ahead are not counted); the
next ``iter()`` skips exactly those batches of the same, seeded epoch order. Workers are seeded from
a private generator, so creating an iterator never draws from ``torch``'s global RNG: a resumed run
sees the same random numbers (dropout) as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """DataLoader with Lightning's ``state_dict`` / ``load_state_dict`` protocol.

    Args:
        *args: as for :class:`torch.utils.data.DataLoader`.
        consumed: returns how many batches of the current epoch the training loop has consumed
            (None: count the batches this loader yielded).
        seed: seed of the private generator for worker seeds.
        **kwargs: as for :class:`torch.utils.data.DataLoader`.
    """

    def __init__(self, *args: Any, consumed: Callable[[], int | None] | None = None, seed: int = 0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(*args, **kwargs)
        self._consumed = consumed
        self._yielded = 0
        self._skip = 0
        self._epoch = 0

    def _current_epoch(self) -> int:
        """The epoch whose order the samplers produce (Lightning sets it on the inner sampler)."""
        for sampler in (getattr(self.batch_sampler, "sampler", None), self.batch_sampler, self.sampler):
            if sampler is not None and hasattr(sampler, "epoch"):
                return int(sampler.epoch)
        return self._epoch

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        if skip and hasattr(self.batch_sampler, "skip_next"):
            self.batch_sampler.skip_next = skip  # leave the consumed batches out at the index level
            return self._counting(super().__iter__(), start=skip)
        return self._counting(super().__iter__(), start=0, discard=skip)

    def _counting(self, batches: Iterator[Any], start: int, discard: int = 0) -> Iterator[Any]:
        # runs at the first next(): the DataLoader (and its workers) have read the sampler by now
        if getattr(self.batch_sampler, "skip_next", 0):
            self.batch_sampler.skip_next = 0
        self._yielded = start
        for batch in batches:
            if discard:
                discard -= 1
                self._yielded += 1
                continue
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        consumed = self._consumed() if self._consumed is not None else None
        return {"epoch": self._current_epoch(), "consumed": int(self._yielded if consumed is None else consumed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._epoch = int(state.get("epoch", 0))
        self._skip = int(state.get("consumed", 0))
        sampler = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._epoch)
