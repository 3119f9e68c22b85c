"""Beam search against greedy search, exhaustive search and hand-built language models."""

from __future__ import annotations

import pytest
import torch

from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.greedy import GreedySearch

from .toy import (
    BEAM_SENTENCE,
    BOS,
    EOS,
    GREEDY_SENTENCE,
    RandomLM,
    TableLM,
    TinyGRUDecoder,
    assert_consistent,
    exhaustive_nbest,
    gru_distribution,
    jane_lm,
    reference_beam_search,
)


def run(strategy, lm, rows, max_len):
    return strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS, max_len=max_len)


def assert_same_hypotheses(got, want):
    assert [h.tokens for h in got] == [h.tokens for h in want]
    for g, w in zip(got, want):
        assert g.log_prob == pytest.approx(w.log_prob, abs=1e-5)
        assert g.score == pytest.approx(w.score, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_size_one_is_greedy(seed):
    lm = RandomLM(vocab_size=6, seed=seed, eos_bias=0.3)
    rows = list(range(10))
    for g, b in zip(run(GreedySearch(), lm, rows, 8), run(BeamSearch(beam_size=1), lm, rows, 8)):
        assert b[0].tokens == g[0].tokens
        assert b[0].log_prob == g[0].log_prob


def test_beam_size_one_is_greedy_with_attention_and_min_len():
    dec = TinyGRUDecoder(vocab_size=6, seed=1)
    seeds = list(range(20, 28))
    greedy = GreedySearch(min_len=2).search(dec, dec.initial_state(seeds), batch_size=8, bos=BOS, eos=EOS,
                                             max_len=7)
    beam = BeamSearch(beam_size=1, min_len=2).search(dec, dec.initial_state(seeds), batch_size=8, bos=BOS,
                                                     eos=EOS, max_len=7)
    for [g], [b] in zip(greedy, beam):
        assert (b.tokens, b.log_prob) == (g.tokens, g.log_prob)
        torch.testing.assert_close(b.attention, g.attention)


@pytest.mark.parametrize("penalty", [0.0, 0.6, 1.0, -0.5])
@pytest.mark.parametrize(("vocab_size", "max_len", "eos_offset", "min_len"),
                         [(5, 3, 0.0, 0), (4, 4, -1.0, 0), (5, 3, 1.0, 2)])
def test_wide_beam_is_exhaustive_search(penalty, vocab_size, max_len, eos_offset, min_len):
    lm = RandomLM(vocab_size=vocab_size, seed=7, eos_offset=eos_offset)
    words = vocab_size - 2  # EOS and BOS are not words
    beam_size = words ** (max_len - 1) * vocab_size  # every candidate of the widest step fits
    rows = [0, 1, 2]
    results = run(BeamSearch(beam_size=beam_size, length_penalty=penalty, n_best=3, min_len=min_len), lm, rows,
                  max_len)
    for ctx, hyps in zip(rows, results):
        want = exhaustive_nbest(lambda p, c=ctx: lm.log_probs(c, p), vocab_size, max_len, n=3, penalty=penalty,
                                min_len=min_len)
        assert_same_hypotheses(hyps, want)


def test_wide_beam_returns_hypotheses_closed_at_max_len():
    lm = RandomLM(vocab_size=4, seed=8, eos_offset=-2.0, eos_bias=0.0)
    for ctx, hyps in zip([0, 1], run(BeamSearch(beam_size=32, n_best=3), lm, [0, 1], 4)):
        want = exhaustive_nbest(lambda p, c=ctx: lm.log_probs(c, p), 4, 4, n=3)
        assert_same_hypotheses(hyps, want)
        assert any(len(h.tokens) == 4 for h in hyps)
        for h in hyps:
            assert_consistent(h, lambda p, c=ctx: lm.log_probs(c, p), max_len=4)


def test_wide_beam_on_gru_decoder_is_exhaustive_search():
    dec = TinyGRUDecoder(vocab_size=5, seed=2)
    seeds = [30, 31]
    results = BeamSearch(beam_size=45, length_penalty=0.6, n_best=3).search(
        dec, dec.initial_state(seeds), batch_size=2, bos=BOS, eos=EOS, max_len=3)
    for s, hyps in zip(seeds, results):
        assert_same_hypotheses(hyps, exhaustive_nbest(gru_distribution(dec, s), 5, 3, n=3, penalty=0.6))


@pytest.mark.parametrize(("beam_size", "n_best", "penalty", "min_len"),
                         [(2, 1, 0.0, 0), (2, 2, 0.6, 0), (3, 2, 1.0, 1), (3, 3, -0.5, 0), (4, 2, 0.0, 2)])
def test_narrow_beam_matches_a_plain_reference(beam_size, n_best, penalty, min_len):
    lm = RandomLM(vocab_size=6, seed=11, eos_bias=0.4)
    rows = list(range(12))
    strategy = BeamSearch(beam_size=beam_size, length_penalty=penalty, n_best=n_best, min_len=min_len)
    for ctx, hyps in zip(rows, run(strategy, lm, rows, 7)):
        want = reference_beam_search(lambda p, c=ctx: lm.log_probs(c, p), beam_size, n_best, 7, penalty, min_len)
        assert_same_hypotheses(hyps, want)


def test_beam_finds_the_more_likely_sentence_greedy_misses():
    lm = jane_lm()
    [[greedy]] = run(GreedySearch(), lm, [0], max_len=20)
    [[beam]] = run(BeamSearch(beam_size=3), lm, [0], max_len=20)
    assert lm.decode(greedy.tokens) == GREEDY_SENTENCE
    assert lm.decode(beam.tokens) == BEAM_SENTENCE
    assert beam.log_prob > greedy.log_prob
    assert lm.calls < 2 * 20  # both stopped well before max_len


def test_done_rows_leave_the_decoder_computation():
    lm = RandomLM(vocab_size=6, seed=12, eos_offset=1.0, eos_bias=1.0)
    run(BeamSearch(beam_size=3, n_best=2), lm, range(8), max_len=20)
    sizes = lm.rows_per_call
    assert sizes[0] == 8 * 3
    assert all(n % 3 == 0 for n in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] < sizes[0] and len(sizes) < 20


def test_row_result_does_not_depend_on_the_batch():
    lm = RandomLM(vocab_size=6, seed=9, eos_bias=0.3)
    strategy = BeamSearch(beam_size=3, length_penalty=0.6, n_best=2)
    rows = [4, 8, 15, 16, 23, 42]
    for ctx, hyps in zip(rows, run(strategy, lm, rows, 7)):
        [alone] = run(strategy, lm, [ctx], 7)
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        assert [h.log_prob for h in alone] == pytest.approx([h.log_prob for h in hyps], abs=1e-5)
    dec = TinyGRUDecoder(vocab_size=6, seed=3)
    seeds = [1, 2, 3, 4]
    batch = strategy.search(dec, dec.initial_state(seeds), batch_size=4, bos=BOS, eos=EOS, max_len=6)
    for s, hyps in zip(seeds, batch):
        [alone] = strategy.search(dec, dec.initial_state([s]), batch_size=1, bos=BOS, eos=EOS, max_len=6)
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        assert [h.log_prob for h in alone] == pytest.approx([h.log_prob for h in hyps], abs=1e-5)


def test_n_best_count_order_and_consistency():
    lm = RandomLM(vocab_size=5, seed=10, eos_bias=0.5)
    results = run(BeamSearch(beam_size=4, n_best=3, length_penalty=1.0, min_len=2), lm, [0, 1, 2, 3], 6)
    for ctx, hyps in zip([0, 1, 2, 3], results):
        assert len(hyps) == 3
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3
        for h in hyps:
            assert_consistent(h, lambda p, c=ctx: lm.log_probs(c, p), max_len=6, min_len=2)
            steps = len(h.tokens) + int(len(h.tokens) < 6)
            assert h.score == pytest.approx(h.log_prob / steps, abs=1e-6)


def test_length_penalty_changes_the_ranking():
    # "" (then EOS) has P = 0.5; "a a a" (then EOS) has P = 0.49 * 0.8 * 0.8 * 0.8 ≈ 0.25.
    lm = TableLM(["a", "b"], {(): {"<eos>": 0.5, "a": 0.49}, ("a",): {"a": 0.8}, ("a", "a"): {"a": 0.8},
                              ("a", "a", "a"): {"<eos>": 0.8}})
    [[raw]] = run(BeamSearch(beam_size=3), lm, [0], max_len=6)
    [[normalized]] = run(BeamSearch(beam_size=3, length_penalty=1.0), lm, [0], max_len=6)
    assert raw.tokens == []
    assert lm.decode(normalized.tokens) == "a a a"
    assert normalized.log_prob < raw.log_prob
    assert normalized.score == pytest.approx(normalized.log_prob / 4)


def test_attention_follows_the_beam_ancestry():
    dec = TinyGRUDecoder(vocab_size=6, src_len=5, seed=4)
    seeds = [40, 41, 42]
    results = BeamSearch(beam_size=4, n_best=4).search(dec, dec.initial_state(seeds), batch_size=3, bos=BOS,
                                                       eos=EOS, max_len=6)
    for s, hyps in zip(seeds, results):
        assert len(hyps) == 4
        for h in hyps:
            steps = len(h.tokens) + int(len(h.tokens) < 6)
            assert h.attention.shape == (steps, 5)
            torch.testing.assert_close(h.attention.sum(-1), torch.ones(steps))
            _, atts = dec.teacher_force(s, h.tokens)
            torch.testing.assert_close(h.attention, torch.stack(atts[:steps]), atol=1e-5, rtol=0)
            assert_consistent(h, gru_distribution(dec, s), max_len=6)


def test_no_attention_without_decoder_attention():
    for hyps in run(BeamSearch(beam_size=2, n_best=2), RandomLM(), [0, 1], 4):
        assert all(h.attention is None for h in hyps)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="beam_size"):
        BeamSearch(beam_size=0)
    with pytest.raises(ValueError, match="n_best"):
        BeamSearch(beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="n_best"):
        BeamSearch(n_best=0)
    with pytest.raises(ValueError, match="min_len"):
        BeamSearch(min_len=-1)
    with pytest.raises(ValueError, match="max_len"):
        run(BeamSearch(), RandomLM(), [0], max_len=0)


@pytest.mark.parametrize("penalty", [0.0, -0.5])
def test_early_stopping_equals_exact_without_a_positive_length_penalty(penalty):
    lm = RandomLM(vocab_size=6, seed=5, eos_bias=0.3)
    rows = list(range(10))
    exact = run(BeamSearch(beam_size=3, n_best=2, length_penalty=penalty), lm, rows, 9)
    calls = lm.calls
    early = run(BeamSearch(beam_size=3, n_best=2, length_penalty=penalty, stopping="early"), lm, rows, 9)
    assert lm.calls == 2 * calls
    for got, want in zip(early, exact):
        assert_same_hypotheses(got, want)


def test_early_stopping_takes_fewer_steps_with_a_length_penalty():
    lm = RandomLM(vocab_size=6, seed=12, scale=3.0, eos_bias=0.3)
    rows = list(range(16))
    exact = run(BeamSearch(beam_size=3, length_penalty=1.0), lm, rows, 30)
    exact_steps = len(lm.rows_per_call)
    early = run(BeamSearch(beam_size=3, length_penalty=1.0, stopping="early"), lm, rows, 30)
    early_steps = len(lm.rows_per_call) - exact_steps
    assert early_steps < exact_steps
    same = sum(g[0].tokens == w[0].tokens for g, w in zip(early, exact))
    assert same >= 12  # mostly the same output
    for hyps in early:  # every result is a finished, well-scored hypothesis
        best = hyps[0]
        assert best.score == pytest.approx(best.log_prob / (len(best.tokens) + 1), abs=1e-5)


def test_invalid_stopping_raises():
    with pytest.raises(ValueError, match="stopping"):
        BeamSearch(stopping="sometimes")


@pytest.mark.parametrize("stopping", ["exact", "early"])
@pytest.mark.parametrize("penalty", [0.0, 1.0, -0.5])
def test_per_row_limits_equal_searching_each_row_alone(stopping, penalty):
    lm = RandomLM(vocab_size=6, seed=3, scale=3.0, eos_bias=0.2)
    rows = list(range(9))
    limits = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9])
    strategy = BeamSearch(beam_size=3, n_best=2, length_penalty=penalty, stopping=stopping)
    together = strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS, max_len=9,
                               max_lens=limits)
    for row, limit, hyps in zip(rows, limits.tolist(), together):
        [alone] = run(strategy, lm, [row], limit)
        assert_same_hypotheses(hyps, alone)
        assert all(len(h.tokens) <= limit for h in hyps)


def test_per_row_limits_are_checked():
    lm = RandomLM(vocab_size=6, seed=3)
    with pytest.raises(ValueError, match="max_lens"):
        BeamSearch().search(lm, lm.initial_state([0, 1]), batch_size=2, bos=BOS, eos=EOS, max_len=4,
                            max_lens=torch.tensor([2, 5]))
