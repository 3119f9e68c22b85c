"""The public decoding functions of seq2seq_lightning.search.functional."""

from __future__ import annotations

import pytest
import torch

from seq2seq_lightning import search
from seq2seq_lightning.search.functional import (
    NEG_INF,
    beam_candidates,
    inverse_cdf_sample,
    mask_tokens,
    pick_beams,
    repeated_ngram_mask,
    seeded_uniform,
)


def test_every_block_is_exported_from_the_package():
    for name in search.functional.__all__:
        assert getattr(search, name) is getattr(search.functional, name)
        assert getattr(search.functional, name).__doc__ or name == "NEG_INF"


def test_pick_beams_follows_each_candidate_to_its_beam():
    x = torch.arange(2 * 3 * 2).view(2, 3, 2)  # (A=2, K=3, 2)
    index = torch.tensor([[2, 2, 0], [1, 0, 1]])  # (A, M=3)
    out = pick_beams(x, index)
    assert out.shape == (2, 3, 2)
    assert out.tolist() == [[x[0, 2].tolist(), x[0, 2].tolist(), x[0, 0].tolist()],
                            [x[1, 1].tolist(), x[1, 0].tolist(), x[1, 1].tolist()]]


def test_mask_tokens():
    lp = torch.zeros(2, 4)
    out = mask_tokens(lp, torch.tensor([True, False, False, True]))
    assert torch.isinf(out).tolist() == [[True, False, False, True]] * 2
    assert not torch.isinf(lp).any()


def test_repeated_ngram_mask():
    prefix = torch.tensor([[2, 3, 2, 4, 2], [1, 1, 1, 1, 1]])  # (2, 5)
    bigram = repeated_ngram_mask(prefix, 2, 6)
    assert bigram[0].nonzero().flatten().tolist() == [3, 4]  # after the last 2: "2 3" and "2 4" were seen
    assert bigram[1].nonzero().flatten().tolist() == [1]
    trigram = repeated_ngram_mask(prefix, 3, 6)
    assert trigram[0].nonzero().flatten().tolist() == []  # "4 2 _" never seen before
    assert trigram[1].nonzero().flatten().tolist() == [1]
    assert repeated_ngram_mask(prefix, 1, 6)[0].nonzero().flatten().tolist() == [2, 3, 4]
    assert not repeated_ngram_mask(prefix[:, :1], 2, 6).any()
    assert repeated_ngram_mask(torch.zeros(3, 2, 0, dtype=torch.long), 2, 6).shape == (3, 2, 6)
    with pytest.raises(ValueError, match="n must be"):
        repeated_ngram_mask(prefix, 0, 6)


def test_beam_candidates_first_and_live():
    V, eos = 4, 0
    scores = torch.full((1, 2, V), NEG_INF)  # (A=1, W=2, V)
    scores[0, 0] = torch.tensor([-0.1, -1.0, -3.0, -4.0])  # EOS best
    scores[0, 1] = torch.tensor([-0.5, -2.0, -5.0, -6.0])
    first, live = beam_candidates(scores, eos)
    assert first.tolist() == [[0 * V + 0, 1 * V + 0]]  # the two best: EOS of beam 0 and of beam 1
    assert live.tolist() == [[0 * V + 1, 1 * V + 1]]  # the best non-EOS among the best four


def test_seeded_uniform_is_a_pure_function_of_seed_stream_and_step():
    streams = torch.arange(5000)
    u = seeded_uniform(3, streams, 7)
    assert u.dtype == torch.float64 and u.shape == (5000,)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert torch.equal(seeded_uniform(3, streams[[4, 2]], 7), u[[4, 2]])
    assert not torch.equal(seeded_uniform(4, streams, 7), u)
    assert not torch.equal(seeded_uniform(3, streams, 8), u)
    assert float(u.mean()) == pytest.approx(0.5, abs=0.02)
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / 5000
    assert torch.allclose(hist, torch.full((10,), 0.1), atol=0.025)
    across = torch.stack([seeded_uniform(3, torch.tensor([0]), t) for t in range(2000)]).flatten()
    assert float(across.mean()) == pytest.approx(0.5, abs=0.03)
    assert seeded_uniform(2**40 + 3, streams[:3], 0).tolist() != seeded_uniform(3, streams[:3], 0).tolist()


def test_inverse_cdf_sample():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0], [0.2, 0.0, 0.8, 0.0, 0.0]])
    u = torch.tensor([0.0, 0.0], dtype=torch.float64)
    assert inverse_cdf_sample(probs, u).tolist() == [1, 0]
    assert inverse_cdf_sample(probs, torch.tensor([0.5, 0.2], dtype=torch.float64)).tolist() == [3, 2]
    near_one = torch.tensor([1 - 2**-40] * 2, dtype=torch.float64)
    assert inverse_cdf_sample(probs, near_one).tolist() == [3, 2]  # never a zero-probability token
    draws = inverse_cdf_sample(probs[:1].expand(4000, -1), torch.rand(4000, dtype=torch.float64))
    assert set(draws.tolist()) == {1, 3}
    assert float((draws == 1).double().mean()) == pytest.approx(0.5, abs=0.04)
