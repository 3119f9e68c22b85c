"""Sampling search and the filtering functions it is built from."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from seq2seq_lightning.search.functional import length_normalize, top_k_filter, top_p_filter
from seq2seq_lightning.search.greedy import GreedySearch
from seq2seq_lightning.search.sampling import SamplingSearch

from .toy import BOS, EOS, ConstantLM, RandomLM, TinyGRUDecoder, assert_consistent, gru_distribution

NEG_INF = float("-inf")
# EOS, BOS, then four words with probabilities 0.4, 0.3, 0.15, 0.1.
CONSTANT = [0.05, 1e-9, 0.4, 0.3, 0.15, 0.1 - 1e-9]


def run(strategy, lm, rows, max_len):
    return strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS, max_len=max_len)


def draw_first_tokens(strategy, n=3000):
    """Token of every one-step sample from the constant distribution (EOS counted as EOS)."""
    lm = ConstantLM(CONSTANT)
    [hyps] = strategy.search(lm, torch.zeros(1, 1), batch_size=1, bos=BOS, eos=EOS, max_len=1)
    assert len(hyps) == n
    return Counter(h.tokens[0] if h.tokens else EOS for h in hyps)


def test_top_k_filter_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0], [5.0, 4.0, 3.0, 2.0]])  # (N=2, V=4)
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True], [True, True, False, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 4), logits)


def test_top_p_filter_keeps_the_smallest_nucleus():
    logits = torch.tensor(CONSTANT).log()[None]  # (1, 6)
    kept = {p: torch.isfinite(top_p_filter(logits, p))[0].nonzero().flatten().tolist() for p in (0.01, 0.6, 0.8)}
    assert kept == {0.01: [2], 0.6: [2, 3], 0.8: [2, 3, 4]}
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_length_normalize():
    lp = torch.tensor([-2.0, -6.0])
    assert torch.equal(length_normalize(lp, 4, 0.0), lp)
    torch.testing.assert_close(length_normalize(lp, torch.tensor([1, 4]), 1.0), torch.tensor([-2.0, -1.5]))


def test_same_seed_same_samples():
    lm = RandomLM(vocab_size=6, seed=0, scale=1.0)
    first = run(SamplingSearch(seed=123, num_samples=4), lm, range(5), 8)
    again = run(SamplingSearch(seed=123, num_samples=4), lm, range(5), 8)
    other = run(SamplingSearch(seed=321, num_samples=4), lm, range(5), 8)
    tokens = [[h.tokens for h in hyps] for hyps in first]
    assert tokens == [[h.tokens for h in hyps] for hyps in again]
    assert tokens != [[h.tokens for h in hyps] for hyps in other]


def test_without_seed_the_global_generator_is_used():
    lm = RandomLM(vocab_size=6, seed=0, scale=1.0)
    torch.manual_seed(5)
    first = run(SamplingSearch(num_samples=3), lm, range(4), 6)
    torch.manual_seed(5)
    again = run(SamplingSearch(num_samples=3), lm, range(4), 6)
    assert [[h.tokens for h in r] for r in first] == [[h.tokens for h in r] for r in again]


@pytest.mark.parametrize("strategy", [SamplingSearch(top_k=1, seed=0), SamplingSearch(top_p=1e-6, seed=0),
                                      SamplingSearch(temperature=1e-4, seed=0)], ids=["top_k", "top_p", "temp"])
def test_degenerate_sampling_is_greedy(strategy):
    lm = RandomLM(vocab_size=6, seed=1, scale=1.0)
    rows = list(range(10))
    for [g], [s] in zip(run(GreedySearch(), lm, rows, 8), run(strategy, lm, rows, 8)):
        assert s.tokens == g.tokens
        assert s.log_prob == pytest.approx(g.log_prob, abs=1e-6)


def test_top_k_samples_only_from_the_k_most_likely():
    counts = draw_first_tokens(SamplingSearch(top_k=2, seed=0, num_samples=3000))
    assert set(counts) == {2, 3}
    assert counts[2] / 3000 == pytest.approx(0.4 / 0.7, abs=0.04)


def test_top_p_samples_only_from_the_nucleus():
    counts = draw_first_tokens(SamplingSearch(top_p=0.8, seed=1, num_samples=3000))
    assert set(counts) == {2, 3, 4}
    assert counts[4] / 3000 == pytest.approx(0.15 / 0.85, abs=0.04)


def test_plain_sampling_follows_the_model_distribution():
    counts = draw_first_tokens(SamplingSearch(seed=2, num_samples=3000))
    assert BOS not in counts
    for tok in (EOS, 2, 3, 4, 5):
        assert counts[tok] / 3000 == pytest.approx(CONSTANT[tok], abs=0.04)


def test_high_temperature_flattens_the_distribution():
    counts = draw_first_tokens(SamplingSearch(temperature=5.0, top_k=4, seed=3, num_samples=3000))
    assert set(counts) == {2, 3, 4, 5}
    assert counts[5] / 3000 > 0.18  # 0.1 at temperature 1


def test_log_prob_is_the_models_own_and_samples_are_sorted():
    lm = RandomLM(vocab_size=6, seed=2, scale=1.0)
    strategy = SamplingSearch(temperature=1.7, top_k=4, top_p=0.9, seed=7, num_samples=5, min_len=2)
    results = run(strategy, lm, range(6), 6)
    for ctx, hyps in zip(range(6), results):
        assert len(hyps) == 5
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert h.score == h.log_prob
            assert_consistent(h, lambda p, c=ctx: lm.log_probs(c, p), max_len=6, min_len=2)


def test_attention_of_samples():
    dec = TinyGRUDecoder(vocab_size=6, src_len=3, seed=5)
    seeds = [50, 51]
    results = SamplingSearch(seed=0, num_samples=3).search(dec, dec.initial_state(seeds), batch_size=2, bos=BOS,
                                                           eos=EOS, max_len=5)
    for s, hyps in zip(seeds, results):
        for h in hyps:
            steps = len(h.tokens) + int(len(h.tokens) < 5)
            assert h.attention.shape == (steps, 3)
            _, atts = dec.teacher_force(s, h.tokens)
            torch.testing.assert_close(h.attention, torch.stack(atts[:steps]), atol=1e-5, rtol=0)
            assert_consistent(h, gru_distribution(dec, s), max_len=5)
            assert math.isfinite(h.log_prob)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
    ({"num_samples": 0}, "num_samples"), ({"min_len": -2}, "min_len"),
])
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingSearch(**kwargs)


def samples(results):
    return [[(h.tokens, h.log_prob) for h in hyps] for hyps in results]


def test_a_seeded_row_samples_the_same_wherever_it_is_searched():
    lm = RandomLM(vocab_size=6, seed=3, scale=1.0, eos_bias=0.2)
    strategy = SamplingSearch(seed=11, num_samples=4, temperature=1.3, top_k=4)
    row, limit = 5, 7

    def sample_of_row(rows, limits, max_len=8):
        results = strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS,
                                  max_len=max_len, max_lens=torch.tensor(limits))
        return samples(results)[rows.index(row)]

    [alone] = samples(run(strategy, lm, [row], limit))
    assert sample_of_row([row], [limit], max_len=limit) == alone
    assert sample_of_row([1, row, 9], [8, limit, 8]) == alone  # in a batch
    assert sample_of_row([row, 2, 3, 4], [limit, 1, 2, 3]) == alone  # first, other limits
    assert sample_of_row([0, 2, 8, row], [2, 8, 1, limit]) == alone  # last, another mix
    assert len(alone) == 4 and len({tuple(t) for t, _ in alone}) > 1  # the samples differ from each other


def test_seeded_sampling_is_the_same_in_groups_as_all_at_once():
    lm = RandomLM(vocab_size=6, seed=8, scale=1.0, eos_bias=0.2)
    strategy = SamplingSearch(seed=3, num_samples=2, top_p=0.9)
    rows = list(range(10))
    together = samples(run(strategy, lm, rows, 6))
    grouped = samples(run(strategy, lm, rows[:3], 6)) + samples(run(strategy, lm, rows[3:], 6))
    assert together == grouped


def test_sampling_per_row_limits_equal_searching_each_row_alone():
    lm = RandomLM(vocab_size=6, seed=4, scale=1.0, eos_bias=0.1)
    rows = list(range(8))
    limits = torch.tensor([3, 1, 8, 2, 5, 8, 4, 6])
    strategy = SamplingSearch(seed=5, num_samples=3, temperature=1.5, min_len=1)
    together = strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS, max_len=8,
                               max_lens=limits)
    assert SamplingSearch.row_limits
    for row, limit, hyps in zip(rows, limits.tolist(), together):
        [alone] = run(strategy, lm, [row], limit)
        assert samples([hyps]) == samples([alone])
        for h in hyps:
            assert_consistent(h, lambda p, c=row: lm.log_probs(c, p), max_len=limit, min_len=1)


def test_seeded_sampling_leaves_the_global_generator_alone():
    lm = RandomLM(vocab_size=6, seed=0, scale=1.0)
    before = torch.get_rng_state()
    run(SamplingSearch(seed=1, num_samples=3), lm, range(4), 6)
    assert torch.equal(torch.get_rng_state(), before)


def test_unseeded_sampling_draws_from_the_global_generator():
    lm = RandomLM(vocab_size=6, seed=0, scale=1.0)
    torch.manual_seed(5)
    first = samples(run(SamplingSearch(num_samples=3), lm, range(4), 6))
    after = torch.get_rng_state()
    torch.manual_seed(5)
    assert not torch.equal(torch.get_rng_state(), after)  # the search advanced it
    assert samples(run(SamplingSearch(num_samples=3), lm, range(4), 6)) == first
    torch.manual_seed(6)
    assert samples(run(SamplingSearch(num_samples=3), lm, range(4), 6)) != first
