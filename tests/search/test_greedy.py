"""Greedy search against tiny seeded decoders."""

from __future__ import annotations

import pytest
import torch

from seq2seq_lightning.search.greedy import GreedySearch

from .toy import (
    BOS,
    EOS,
    GREEDY_SENTENCE,
    RandomLM,
    TinyGRUDecoder,
    assert_consistent,
    gru_distribution,
    jane_lm,
)


def run(strategy, lm, contexts, max_len):
    return strategy.search(lm, lm.initial_state(contexts), batch_size=len(contexts), bos=BOS, eos=EOS,
                           max_len=max_len)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_takes_the_argmax_at_every_step(seed):
    lm = RandomLM(vocab_size=5, seed=seed)
    contexts = [0, 1, 2, 3, 4, 5]
    results = run(GreedySearch(), lm, contexts, max_len=6)
    assert len(results) == len(contexts)
    for ctx, hyps in zip(contexts, results):
        assert len(hyps) == 1
        hyp = hyps[0]
        seq = hyp.tokens + ([EOS] if len(hyp.tokens) < 6 else [])
        for i, tok in enumerate(seq):
            assert int(lm.log_probs(ctx, tuple(seq[:i])).argmax()) == tok
        assert_consistent(hyp, lambda p, c=ctx: lm.log_probs(c, p), max_len=6)
        assert hyp.score == hyp.log_prob
        assert hyp.attention is None


def test_greedy_stops_at_eos_and_stops_calling_the_decoder():
    lm = jane_lm()
    [[hyp]] = run(GreedySearch(), lm, [0], max_len=30)
    assert lm.decode(hyp.tokens) == GREEDY_SENTENCE
    assert lm.calls == len(hyp.tokens) + 1  # the EOS step is the last call


def test_finished_rows_leave_the_decoder_computation():
    lm = RandomLM(vocab_size=6, seed=12, eos_offset=1.0, eos_bias=1.0)
    results = run(GreedySearch(), lm, range(8), max_len=20)
    lengths = [len(h.tokens) for [h] in results]
    # A row with n tokens is fed at steps 0..n (the last one produces its EOS).
    assert lm.rows_per_call == [sum(n >= t for n in lengths) for t in range(max(lengths) + 1)]


def test_max_len_closes_hypotheses_without_eos_term():
    lm = RandomLM(vocab_size=5, seed=3, eos_offset=-20.0, eos_bias=0.0)  # EOS never wins
    results = run(GreedySearch(), lm, [0, 1, 2], max_len=4)
    for ctx, [hyp] in zip([0, 1, 2], results):
        assert len(hyp.tokens) == 4
        assert_consistent(hyp, lambda p, c=ctx: lm.log_probs(c, p), max_len=4)
    assert lm.calls == 4


@pytest.mark.parametrize("min_len", [1, 3, 10])
def test_min_len_forbids_early_eos(min_len):
    lm = RandomLM(vocab_size=5, seed=4, eos_offset=3.0, eos_bias=3.0)  # EOS likely from the start
    unconstrained = run(GreedySearch(), lm, range(8), max_len=6)
    assert any(len(h.tokens) < min(min_len, 6) for [h] in unconstrained)
    for ctx, [hyp] in zip(range(8), run(GreedySearch(min_len=min_len), lm, range(8), max_len=6)):
        assert len(hyp.tokens) >= min(min_len, 6)
        assert_consistent(hyp, lambda p, c=ctx: lm.log_probs(c, p), max_len=6, min_len=min_len)


def test_row_result_does_not_depend_on_the_batch():
    lm = RandomLM(vocab_size=5, seed=5)
    batch = run(GreedySearch(), lm, [7, 3, 9, 1], max_len=8)
    for ctx, [hyp] in zip([7, 3, 9, 1], batch):
        [[alone]] = run(GreedySearch(), lm, [ctx], max_len=8)
        assert alone.tokens == hyp.tokens
        assert alone.log_prob == pytest.approx(hyp.log_prob, abs=1e-5)


def test_attention_follows_the_generated_steps():
    dec = TinyGRUDecoder(vocab_size=5, src_len=4, seed=0)
    seeds = [10, 11, 12, 13]
    results = GreedySearch().search(dec, dec.initial_state(seeds), batch_size=4, bos=BOS, eos=EOS, max_len=5)
    for s, [hyp] in zip(seeds, results):
        steps = len(hyp.tokens) + int(len(hyp.tokens) < 5)
        assert hyp.attention.shape == (steps, 4)
        torch.testing.assert_close(hyp.attention.sum(-1), torch.ones(steps))
        _, atts = dec.teacher_force(s, hyp.tokens)
        torch.testing.assert_close(hyp.attention, torch.stack(atts[:steps]), atol=1e-5, rtol=0)
        assert_consistent(hyp, gru_distribution(dec, s), max_len=5)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="min_len"):
        GreedySearch(min_len=-1)
    lm = RandomLM()
    with pytest.raises(ValueError, match="max_len"):
        run(GreedySearch(), lm, [0], max_len=0)


def test_per_row_limits_equal_searching_each_row_alone():
    lm = RandomLM(vocab_size=6, seed=4, scale=3.0, eos_bias=0.1)
    rows = list(range(8))
    limits = torch.tensor([3, 1, 8, 2, 5, 8, 4, 6])
    together = GreedySearch().search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS,
                                     max_len=8, max_lens=limits)
    for row, limit, [hyp] in zip(rows, limits.tolist(), together):
        [[alone]] = run(GreedySearch(), lm, [row], limit)
        assert hyp.tokens == alone.tokens and len(hyp.tokens) <= limit
        assert hyp.log_prob == pytest.approx(alone.log_prob, abs=1e-5)
