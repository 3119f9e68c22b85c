"""Length-bucketed batch sampler, padding waste and collation."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, DistributedSampler

from seq2seq_lightning.data.batching import BucketBatchSampler, collate_translation, padding_waste


def skewed_lengths(n: int = 5000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)  # log-normal, like sentence lengths: mostly short, a long tail
    return [max(1, min(300, int(math.exp(rng.gauss(3, 0.8))))) for _ in range(n)]


def flatten(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 50), min_size=0, max_size=300),
    batch_size=st.integers(1, 17),
    shuffle=st.booleans(),
    multiplier=st.integers(1, 5),
    max_tokens=st.one_of(st.none(), st.integers(1, 200)),
    epoch=st.integers(0, 3),
)
def test_every_index_exactly_once(
    lengths: list[int], batch_size: int, shuffle: bool, multiplier: int, max_tokens: int | None, epoch: int
) -> None:
    sampler = BucketBatchSampler(
        lengths, batch_size, shuffle, seed=3, bucket_size_multiplier=multiplier, max_tokens=max_tokens
    )
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert sorted(flatten(batches)) == list(range(len(lengths)))
    assert len(sampler) == len(batches)
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    if max_tokens is not None:
        for batch in batches:
            assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= max_tokens


def test_batches_are_sorted_by_length_within_pools() -> None:
    lengths = skewed_lengths(1000)
    for batch in BucketBatchSampler(lengths, 10, shuffle=True, bucket_size_multiplier=100):
        batch_lengths = [lengths[i] for i in batch]
        assert batch_lengths == sorted(batch_lengths)


def test_deterministic_per_seed_and_epoch() -> None:
    lengths = skewed_lengths(2000)

    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = BucketBatchSampler(lengths, 16, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0)
    assert order(5, 2) == order(5, 2)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    # Re-iterating the same sampler without set_epoch repeats the epoch.
    sampler = BucketBatchSampler(lengths, 16, shuffle=True, seed=0)
    assert list(sampler) == list(sampler) == order(0, 0)


def test_no_shuffle_is_fixed_and_pool_by_pool() -> None:
    lengths = [5, 1, 4, 2, 3, 9, 7, 8]
    sampler = BucketBatchSampler(lengths, 2, shuffle=False, bucket_size_multiplier=2)
    assert list(sampler) == [[1, 3], [2, 0], [4, 6], [7, 5]]
    sampler.set_epoch(3)
    assert list(sampler) == [[1, 3], [2, 0], [4, 6], [7, 5]]


def test_drop_last_drops_only_the_incomplete_final_batch() -> None:
    lengths = list(range(1, 104))
    sampler = BucketBatchSampler(lengths, 10, shuffle=True, bucket_size_multiplier=3, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    assert all(len(batch) == 10 for batch in batches)
    assert len(set(flatten(batches))) == 100


def test_padding_waste_is_far_below_random_batching() -> None:
    lengths = skewed_lengths(5000)
    bucketed = padding_waste(lengths, BucketBatchSampler(lengths, 32, shuffle=True))
    rng = random.Random(0)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    random_batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    unbucketed = padding_waste(lengths, random_batches)
    assert unbucketed > 0.5
    assert bucketed < 0.25 * unbucketed, (bucketed, unbucketed)
    # Wider pools sort more globally and waste less.
    wide = padding_waste(lengths, BucketBatchSampler(lengths, 32, shuffle=True, bucket_size_multiplier=200))
    assert wide < bucketed


def test_padding_waste_values() -> None:
    assert padding_waste([2, 2, 4], [[0, 1]]) == 0.0
    assert padding_waste([1, 3], [[0, 1]]) == pytest.approx(1 - 4 / 6)
    assert padding_waste([], []) == 0.0


def test_lightning_can_inject_a_distributed_sampler() -> None:
    """Under DDP Lightning re-creates the batch sampler with ``sampler=DistributedSampler(...)``."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler

    lengths = skewed_lengths(1001)
    dataset = list(range(len(lengths)))
    shards, epochs = [], []
    for rank in range(2):
        with _replace_dunder_methods(BatchSampler):  # what Lightning does around the *_dataloader hooks
            loader = DataLoader(dataset, batch_sampler=BucketBatchSampler(lengths, 8, shuffle=True, seed=1))
        distributed = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=1)
        loader = _update_dataloader(loader, distributed)
        assert isinstance(loader.batch_sampler, BucketBatchSampler)
        assert loader.batch_sampler.sampler is distributed
        first = [batch.tolist() for batch in loader]
        distributed.set_epoch(1)  # what Lightning calls each epoch
        second = [batch.tolist() for batch in loader]
        assert first != second
        shards.append(first)
        epochs.append(second)
    assert len(shards[0]) == len(shards[1])  # equal batch counts keep DDP in step
    covered = Counter(flatten(shards[0]) + flatten(shards[1]))
    assert set(covered) == set(dataset)
    assert sum(covered.values()) == 1002  # DistributedSampler pads one index to even the shards


def injected_shards(lengths: list[int], batch_size: int, replicas: int, **kwargs) -> list[list[list[int]]]:
    """The batches of each process when Lightning injects its evaluation ``DistributedSampler``."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler

    dataset = list(range(len(lengths)))
    shards = []
    for rank in range(replicas):
        with _replace_dunder_methods(BatchSampler):
            loader = DataLoader(dataset, batch_sampler=BucketBatchSampler(lengths, batch_size, shuffle=False,
                                                                          **kwargs))
        loader = _update_dataloader(loader, DistributedSampler(dataset, num_replicas=replicas, rank=rank,
                                                               shuffle=False))
        assert isinstance(loader.batch_sampler.sampler, DistributedSampler)
        shards.append([batch.tolist() for batch in loader])
        assert len(loader) == len(shards[-1])
    return shards


@pytest.mark.parametrize(("n", "replicas"), [(2, 2), (3, 2), (7, 3), (101, 2), (1001, 3), (5, 4)])
def test_evaluation_shards_hold_every_row_exactly_once(n: int, replicas: int) -> None:
    lengths = skewed_lengths(n)
    shards = injected_shards(lengths, 10, replicas, even_shards=False)
    rows = [len(flatten(shard)) for shard in shards]
    assert sorted(flatten([flatten(shard) for shard in shards])) == list(range(n))  # none repeated, none dropped
    assert max(rows) - min(rows) <= 1 and min(rows) >= 1
    padded = injected_shards(lengths, 10, replicas)  # training keeps the padding: equal shares
    assert len({len(flatten(shard)) for shard in padded}) == 1


def test_fewer_evaluation_rows_than_processes_keep_the_padding_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="repeated"):
        shards = injected_shards([3, 4], 8, 3, even_shards=False)
    assert [flatten(shard) for shard in shards] == [[0], [1], [0]]  # every process has a batch to run


def test_set_epoch_reaches_the_default_sampler_as_lightning_calls_it() -> None:
    lengths = skewed_lengths(500)
    loader = DataLoader(list(range(500)), batch_sampler=BucketBatchSampler(lengths, 8, shuffle=True))
    first = [batch.tolist() for batch in loader]
    loader.batch_sampler.sampler.set_epoch(1)  # Lightning's _set_sampler_epoch targets batch_sampler.sampler
    assert [batch.tolist() for batch in loader] != first


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler([1, 2], 0, shuffle=False)
    with pytest.raises(ValueError, match="max_tokens"):
        BucketBatchSampler([1, 2], 2, shuffle=False, max_tokens=0)


def test_collate_translation_pads_and_keeps_fields() -> None:
    examples = [
        {"index": 4, "source": [5, 6, 3], "target": [2, 7, 3], "source_text": "ab", "target_text": "c"},
        {
            "index": 1,
            "source": torch.tensor([3]),
            "target": [2, 7, 8, 9, 3],
            "source_text": "",
            "target_text": "xyz",
        },
    ]
    batch = collate_translation(examples, pad_id=0)
    assert batch.source.tolist() == [[5, 6, 3], [3, 0, 0]]
    assert batch.source.dtype == torch.long
    assert batch.source_lengths.tolist() == [3, 1]
    assert batch.target.tolist() == [[2, 7, 3, 0, 0], [2, 7, 8, 9, 3]]
    assert batch.target_lengths.tolist() == [3, 5]
    assert batch.index.tolist() == [4, 1]
    assert batch.source_text == ["ab", ""] and batch.target_text == ["c", "xyz"]


def test_collate_without_targets() -> None:
    examples = [{"index": 0, "source": [4, 3], "target": None, "source_text": "a", "target_text": ""}]
    batch = collate_translation(examples, pad_id=0)
    assert batch.target is None and batch.target_lengths is None
    assert batch.target_text == [""]
    with pytest.raises(ValueError, match="mixes"):
        collate_translation(examples + [{**examples[0], "target": [2, 3]}], pad_id=0)
