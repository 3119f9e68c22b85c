"""ResumableDataLoader: skips consumed batches of the same epoch order; never touches the global RNG."""

from __future__ import annotations

import torch

from seq2seq_lightning.data.batching import BucketBatchSampler
from seq2seq_lightning.data.loader import ResumableDataLoader


def make(n: int = 50, workers: int = 0) -> ResumableDataLoader:
    lengths = [(i * 7) % 13 + 1 for i in range(n)]
    sampler = BucketBatchSampler(lengths, 4, shuffle=True, seed=3)
    return ResumableDataLoader(list(range(n)), batch_sampler=sampler, num_workers=workers,
                               collate_fn=lambda xs: list(xs))


def test_resume_inside_an_epoch_continues_the_same_order() -> None:
    loader = make()
    loader.batch_sampler.set_epoch(2)
    full = list(loader)
    it = iter(loader)
    seen = [next(it) for _ in range(5)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "consumed": 5}
    fresh = make()
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert seen + rest == full
    assert list(fresh) == full  # only the first iteration after a resume skips


def test_resume_with_workers() -> None:
    loader = make(workers=2)
    loader.batch_sampler.set_epoch(1)
    full = list(loader)
    fresh = make(workers=2)
    fresh.load_state_dict({"epoch": 1, "consumed": 3})
    assert list(fresh) == full[3:]


def test_iterating_draws_nothing_from_the_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(make())
    list(make(workers=1))
    assert torch.equal(torch.rand(3), expected)
