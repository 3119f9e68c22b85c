"""Length-bucketed batching and padding collation for token sequences.

Batches of similar lengths waste little compute on padding. :class:`BucketBatchSampler` draws
pools of ``batch_size * bucket_size_multiplier`` indices (at random when shuffling), sorts each
pool by length, cuts it into batches and shuffles the order of the batches. A pool bounds how
far sorting reaches, so batches still vary from epoch to epoch.

Under DDP Lightning re-creates the batch sampler with a ``DistributedSampler`` as its ``sampler``,
which pads every process's shard to an equal size by repeating rows. Training needs that (each
process runs the same number of steps); evaluation must not count a row twice, so an evaluation
sampler (``even_shards=False``) leaves the padding out: :func:`without_padding`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

from seq2seq_lightning.data.batch import TextBatch


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """Independent random streams per (seed, epoch): 0 draws pools, 1 orders batches."""
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + 2 * epoch + stream)
    return generator


def without_padding(sampler: Sampler[int] | Iterable[int], indices: list[int]) -> list[int]:
    """The ``indices`` one process drew from ``sampler`` less the rows a ``DistributedSampler`` repeated
    to give every process an equal share, so that over all processes each row comes exactly once.

    A ``DistributedSampler`` (``drop_last=False``; Lightning's ``DistributedSamplerWrapper`` too) lays its
    ``n`` rows out in ``num_replicas * ceil(n / num_replicas)`` positions, the ones from ``n`` on
    repeating rows from the start, and gives process ``rank`` the positions ``rank, rank + num_replicas,
    ...``: its k-th index is padding when ``rank + k * num_replicas >= n``. The shards then differ by at
    most one row, which evaluation allows: no collective runs per batch (torchmetrics gathers uneven
    states at the epoch's end), and DDP syncs buffers only in the first forward after a training step.
    Leaving the padding out of the shard is simpler than evaluating it and skipping rows already seen
    by their dataset index: no batch, loss or metric needs a mask, and no process needs to know what
    the others saw.

    Other samplers are returned as they are. With fewer rows than processes the padding stays (a
    warning says that repeated rows are counted): a process without a batch would skip the epoch's end,
    and with it the metric synchronisation the others wait in.
    """
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return indices
    n, replicas, rank = len(sampler.dataset), sampler.num_replicas, sampler.rank  # type: ignore[arg-type]
    if n < replicas:
        if n:
            warnings.warn(f"{n} evaluation row(s) for {replicas} processes: every process needs one, so rows are "
                          "repeated and counted more than once in the metrics; evaluate on fewer devices",
                          stacklevel=2)
        return indices
    return [index for k, index in enumerate(indices) if rank + k * replicas < n]


class _EpochIndices(Sampler[int]):
    """``0..n-1``, in a random order per (seed, epoch) when ``shuffle``; Lightning calls ``set_epoch``."""

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=_generator(self.seed, self.epoch, 0)).tolist())

    def __len__(self) -> int:
        return self.n


class BucketBatchSampler(BatchSampler):
    """Batches of indices with similar ``lengths``; each index once per epoch.

    Args:
        lengths: length of each example (e.g. tokens); index ``i`` of the dataset has ``lengths[i]``.
        batch_size: most examples in a batch.
        shuffle: draw pools at random and shuffle the order of the batches, per (seed, epoch).
            Without it, pools are consecutive runs of indices and batches come pool by pool.
        seed: base seed; the order is a function of (seed, epoch) only.
        bucket_size_multiplier: a pool holds ``batch_size * bucket_size_multiplier`` examples.
        drop_last: drop the final batch of the last pool when it has fewer than ``batch_size``
            examples.
        max_tokens: when set, a batch also holds at most ``max_tokens`` padded positions
            (``len(batch) * longest length``); one over-long example still forms its own batch.
        sampler: where the indices come from, instead of ``0..len(lengths)-1``; Lightning passes a
            ``DistributedSampler`` here under DDP so that each process buckets its own shard.
        even_shards: keep the rows such a ``DistributedSampler`` repeats so that every process gets as
            many (what training needs: each process runs the same number of steps). False (evaluation)
            leaves them out (:func:`without_padding`): every row is seen exactly once over all
            processes, and shards differ by at most one row.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        bucket_size_multiplier: int = 50,
        drop_last: bool = False,
        max_tokens: int | None = None,
        sampler: Sampler[int] | Iterable[int] | None = None,
        even_shards: bool = True,
    ) -> None:
        # BatchSampler.__init__ is not called: it only stores and checks its own three arguments.
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if bucket_size_multiplier < 1:
            raise ValueError(f"bucket_size_multiplier must be positive, got {bucket_size_multiplier}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive or None, got {max_tokens}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_size_multiplier = bucket_size_multiplier
        self.drop_last = drop_last
        self.max_tokens = max_tokens
        self.even_shards = even_shards
        self.sampler = sampler if sampler is not None else _EpochIndices(len(self.lengths), shuffle, seed)
        self.epoch = 0
        self.skip_next = 0  # leading batches left out while resuming inside an epoch (the loader resets it)
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration produces."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _current_epoch(self) -> int:
        # Lightning calls set_epoch on `batch_sampler.sampler`, so the sampler's epoch wins.
        return int(getattr(self.sampler, "epoch", self.epoch))

    def batches(self) -> list[list[int]]:
        """The batches of the current epoch, in order."""
        epoch = self._current_epoch()
        if self._cache is not None and self._cache[0] == epoch and isinstance(self.sampler, _EpochIndices):
            return list(self._cache[1])
        generator = _generator(self.seed, epoch, 1)
        indices = list(iter(self.sampler))
        if not self.even_shards:
            indices = without_padding(self.sampler, indices)
        order = torch.as_tensor(indices, dtype=torch.long)
        if self.shuffle and not isinstance(self.sampler, _EpochIndices):
            order = order[torch.randperm(len(order), generator=generator)]  # vary pools of a fixed shard
        pool_size = self.batch_size * self.bucket_size_multiplier
        batches: list[list[int]] = []
        pools = list(torch.split(order, pool_size)) if len(order) else []
        for p, pool in enumerate(pools):
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            pool_batches = self._cut(pool)
            if self.drop_last and p == len(pools) - 1 and pool_batches:
                last = pool_batches[-1]
                if len(last) < self.batch_size and (
                    self.max_tokens is None
                    or (len(last) + 1) * int(self.lengths[last].max()) <= self.max_tokens
                ):
                    pool_batches.pop()
            batches.extend(pool_batches)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if isinstance(self.sampler, _EpochIndices):
            self._cache = (epoch, list(batches))
        return batches

    def _cut(self, pool: torch.Tensor) -> list[list[int]]:
        """Cut a length-sorted pool into batches."""
        if self.max_tokens is None:
            return [chunk.tolist() for chunk in torch.split(pool, self.batch_size)]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index, length in zip(pool.tolist(), self.lengths[pool].tolist()):
            if current and (
                len(current) == self.batch_size or (len(current) + 1) * max(longest, length) > self.max_tokens
            ):
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.skip_next :])

    def __len__(self) -> int:
        if self.max_tokens is None and isinstance(self.sampler, _EpochIndices):
            n = len(self.lengths)
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return len(self.batches())


def padding_waste(lengths: Sequence[int], batches: Iterable[Sequence[int]]) -> float:
    """Share of padded positions: ``1 - real tokens / (sum over batches of len(batch) * longest)``."""
    real = padded = 0
    for batch in batches:
        batch_lengths = [int(lengths[i]) for i in batch]
        if batch_lengths:
            real += sum(batch_lengths)
            padded += len(batch_lengths) * max(batch_lengths)
    return 0.0 if padded == 0 else 1.0 - real / padded


def _as_long(ids: Any) -> torch.Tensor:
    return ids.long() if isinstance(ids, torch.Tensor) else torch.as_tensor(ids, dtype=torch.long)


def collate_translation(examples: Sequence[dict[str, Any]], pad_id: int) -> TextBatch:
    """Pad a list of examples into one :class:`~seq2seq_lightning.data.batch.TextBatch`.

    Each example is a dict with ``"index"`` (int), ``"source"`` (token ids ending in EOS),
    ``"target"`` (ids ``[BOS, ..., EOS]`` or ``None``), ``"source_text"`` and ``"target_text"``
    (str). The batch's ``source`` (B, S) and ``target`` (B, T) are padded with ``pad_id``;
    ``target`` and ``target_lengths`` are None when no example has a target.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    sources = [_as_long(example["source"]) for example in examples]
    targets = [example.get("target") for example in examples]
    target = target_lengths = None
    if any(t is not None for t in targets):
        if any(t is None for t in targets):
            raise ValueError("a batch mixes examples with and without targets")
        target_tensors = [_as_long(t) for t in targets]
        target = pad_sequence(target_tensors, batch_first=True, padding_value=pad_id)  # (B, T)
        target_lengths = torch.tensor([len(t) for t in target_tensors], dtype=torch.long)  # (B,)
    return TextBatch(
        source=pad_sequence(sources, batch_first=True, padding_value=pad_id),  # (B, S)
        source_lengths=torch.tensor([len(s) for s in sources], dtype=torch.long),  # (B,)
        target=target,
        target_lengths=target_lengths,
        index=torch.tensor([int(example["index"]) for example in examples], dtype=torch.long),  # (B,)
        source_text=[example.get("source_text", "") for example in examples],
        target_text=[example.get("target_text") or "" for example in examples],
    )
