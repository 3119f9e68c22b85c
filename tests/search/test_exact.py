"""Exact search against exhaustive search, beam search, its budget, its batching and a real module."""

from __future__ import annotations

import pytest
import torch

from seq2seq_lightning.registry import STRATEGIES
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.exact import ExactHypothesis, ExactSearch
from seq2seq_lightning.testing import check_strategy

from .toy import (
    BEAM_SENTENCE,
    BOS,
    EOS,
    GREEDY_SENTENCE,
    RandomLM,
    TinyGRUDecoder,
    assert_consistent,
    exhaustive_nbest,
    gru_distribution,
    jane_lm,
)


def run(strategy, lm, rows, max_len, max_lens=None):
    kwargs = {} if max_lens is None else {"max_lens": torch.tensor(max_lens)}
    return strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS, max_len=max_len,
                           **kwargs)


def exhaustive_best(lm, ctx, max_len, penalty):
    [best] = exhaustive_nbest(lambda p: lm.log_probs(ctx, p), lm.vocab_size, max_len, n=1, penalty=penalty)
    return best


def assert_same(got, want):
    assert got.tokens == want.tokens
    assert got.log_prob == pytest.approx(want.log_prob, abs=1e-5)
    assert got.score == pytest.approx(want.score, abs=1e-5)


@pytest.mark.parametrize("penalty", [0.0, 0.6, 1.0])
@pytest.mark.parametrize(("vocab_size", "max_len", "eos_offset", "scale"),
                         [(5, 4, 0.0, 2.0), (4, 6, -1.0, 1.0), (5, 5, -2.0, 0.7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_exhaustive_search_with_per_row_limits(seed, vocab_size, max_len, eos_offset, scale, penalty):
    lm = RandomLM(vocab_size=vocab_size, seed=seed, scale=scale, eos_offset=eos_offset)
    rows = list(range(6))
    limits = [max_len, 1, 2, max_len - 1, max_len, 3]
    exact = run(ExactSearch(beam_size=2, length_penalty=penalty), lm, rows, max_len, limits)
    beam = run(BeamSearch(beam_size=2, length_penalty=penalty), lm, rows, max_len, limits)
    for ctx, limit, [got], [b] in zip(rows, limits, exact, beam):
        assert isinstance(got, ExactHypothesis) and got.optimal and got.attention is None
        assert_same(got, exhaustive_best(lm, ctx, limit, penalty))
        assert_consistent(got, lambda p, c=ctx: lm.log_probs(c, p), max_len=limit)
        assert b.score <= got.score + 1e-6  # beam never beats it


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_finds_the_empty_output_when_it_is_the_best(penalty):
    lm = RandomLM(vocab_size=5, seed=4, scale=1.0, eos_offset=2.0, eos_bias=0.0)
    rows = list(range(8))
    results = run(ExactSearch(beam_size=1, length_penalty=penalty), lm, rows, 5)
    empty = 0
    for ctx, [got] in zip(rows, results):
        want = exhaustive_best(lm, ctx, 5, penalty)
        assert_same(got, want)
        empty += want.tokens == []
    assert 0 < empty < len(rows)  # some rows' best is EOS at the first step, some are not


def test_equals_exhaustive_search_on_a_gru_decoder_and_without_a_seed():
    dec = TinyGRUDecoder(vocab_size=5, seed=2)
    seeds = [30, 31, 32]
    for strategy in (ExactSearch(beam_size=1, length_penalty=0.6), ExactSearch(beam_size=0, length_penalty=0.6)):
        results = strategy.search(dec, dec.initial_state(seeds), batch_size=3, bos=BOS, eos=EOS, max_len=3)
        for s, [got] in zip(seeds, results):
            [want] = exhaustive_nbest(gru_distribution(dec, s), 5, 3, n=1, penalty=0.6)
            assert_same(got, want)
            assert got.optimal


def test_built_through_the_registry():
    strategy = STRATEGIES.build("exact", beam_size=2, length_penalty=0.6, max_expansions=None)
    assert isinstance(strategy, ExactSearch) and strategy.row_limits
    assert strategy.init_args == {"beam_size": 2, "length_penalty": 0.6, "max_expansions": None}
    lm = RandomLM(vocab_size=5, seed=3)
    for ctx, [got] in zip([0, 1], run(strategy, lm, [0, 1], 4)):
        assert_same(got, exhaustive_best(lm, ctx, 4, 0.6))


def test_finds_the_sentence_greedy_misses_and_flags_a_spent_budget():
    lm = jane_lm()
    [[found]] = run(ExactSearch(beam_size=1), lm, [0], 20)  # the seed is greedy's sentence
    assert lm.decode(found.tokens) == BEAM_SENTENCE and found.optimal and found.expansions > 1
    [[stopped]] = run(ExactSearch(beam_size=1, max_expansions=1), lm, [0], 20)
    assert lm.decode(stopped.tokens) == GREEDY_SENTENCE  # the best found so far: the seed
    assert not stopped.optimal and stopped.expansions == 1
    assert_consistent(stopped, lambda p: lm.log_probs(0, p), max_len=20)


def test_a_budget_too_small_is_flagged_and_a_sufficient_one_is_not():
    lm = RandomLM(vocab_size=5, seed=1, scale=1.0, eos_bias=0.3)
    rows = list(range(8))
    beam = run(BeamSearch(beam_size=1), lm, rows, 6)
    small = run(ExactSearch(beam_size=1, max_expansions=2), lm, rows, 6)
    enough = run(ExactSearch(beam_size=1, max_expansions=10_000), lm, rows, 6)
    missed = 0
    for ctx, [b], [s], [e] in zip(rows, beam, small, enough):
        want = exhaustive_best(lm, ctx, 6, 0.0)
        assert e.optimal and e.expansions < 10_000
        assert_same(e, want)
        assert s.expansions <= 2 and s.score >= b.score
        assert_consistent(s, lambda p, c=ctx: lm.log_probs(c, p), max_len=6)
        if s.optimal:
            assert_same(s, want)
        missed += b.score < want.score - 1e-6
    assert missed > 0  # beam (greedy) is not optimal on some rows
    assert any(not s.optimal for [s] in small)


def test_many_prefixes_of_many_rows_share_a_decoder_call():
    lm = RandomLM(vocab_size=6, seed=5, scale=1.0, eos_bias=0.3)
    rows = list(range(8))
    run(BeamSearch(beam_size=2, length_penalty=1.0), lm, rows, 7)
    beam_calls = lm.calls
    results = run(ExactSearch(beam_size=2, length_penalty=1.0), lm, rows, 7)
    exact_calls = lm.calls - 2 * beam_calls  # its seeding beam makes the same calls again
    expansions = sum(h.expansions for [h] in results)
    assert max(lm.rows_per_call[2 * beam_calls:]) > 1
    assert exact_calls * 20 < expansions
    lm.rows_per_call.clear()
    small_calls = run(ExactSearch(beam_size=2, length_penalty=1.0, max_rows=16), lm, rows, 7)
    assert max(lm.rows_per_call) <= 16  # the seeding beam's calls are 8 rows x 2 beams
    for [got], [small] in zip(results, small_calls):  # other blocks, the same optimum
        assert small.optimal and small.tokens == got.tokens and small.log_prob == pytest.approx(got.log_prob)


@pytest.mark.parametrize("kwargs", [{"max_expansions": 3, "max_rows": 2}, {"max_expansions": 40, "length_penalty": 1.0},
                                    {"max_rows": 3, "length_penalty": 0.6}])
def test_a_row_does_not_depend_on_its_batch_budget_included(kwargs):
    strategy = ExactSearch(beam_size=2, **kwargs)
    lm = RandomLM(vocab_size=6, seed=9, scale=1.0, eos_bias=0.3)
    rows = [4, 8, 15, 16, 23, 42]
    for ctx, [h] in zip(rows, run(strategy, lm, rows, 7)):
        [[alone]] = run(strategy, lm, [ctx], 7)
        assert (alone.tokens, alone.optimal, alone.expansions) == (h.tokens, h.optimal, h.expansions)
        assert alone.log_prob == pytest.approx(h.log_prob, abs=1e-5)
    dec = TinyGRUDecoder(vocab_size=6, seed=3)
    seeds = [1, 2, 3, 4]
    batch = strategy.search(dec, dec.initial_state(seeds), batch_size=4, bos=BOS, eos=EOS, max_len=6)
    for s, [h] in zip(seeds, batch):
        [[alone]] = strategy.search(dec, dec.initial_state([s]), batch_size=1, bos=BOS, eos=EOS, max_len=6)
        assert (alone.tokens, alone.optimal, alone.expansions) == (h.tokens, h.optimal, h.expansions)


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_a_batch_searched_in_groups_of_max_active_rows_gives_the_same_rows(penalty):
    lm = RandomLM(vocab_size=6, seed=7, scale=1.0, eos_bias=0.3)
    rows, limits = list(range(7)), [7, 2, 5, 7, 1, 6, 4]
    together = run(ExactSearch(beam_size=2, length_penalty=penalty), lm, rows, 7, limits)
    calls = lm.calls
    grouped = run(ExactSearch(beam_size=2, length_penalty=penalty, max_active_rows=3), lm, rows, 7, limits)
    assert lm.calls - calls > calls  # three groups, each with its own seeding beam and rounds
    for [a], [b] in zip(together, grouped):
        assert (a.tokens, a.optimal, a.expansions) == (b.tokens, b.optimal, b.expansions)
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"beam_size": 1, "length_penalty": 1.0}, {"beam_size": 0, "max_rows": 3},
                                    {"max_expansions": 3}, {"length_penalty": -0.5}],
                         ids=["defaults", "penalty", "unseeded-small-blocks", "tiny-budget", "negative-penalty"])
def test_passes_the_conformance_kit(kwargs):
    check_strategy(ExactSearch, **kwargs)


def test_invalid_arguments_raise():
    for kwargs, name in [({"beam_size": -1}, "beam_size"), ({"max_expansions": 0}, "max_expansions"),
                         ({"max_rows": 0}, "max_rows"), ({"max_active_rows": 0}, "max_active_rows")]:
        with pytest.raises(ValueError, match=name):
            ExactSearch(**kwargs)
    with pytest.raises(ValueError, match="max_len"):
        run(ExactSearch(), RandomLM(), [0], max_len=0)
    with pytest.raises(ValueError, match="max_lens"):
        run(ExactSearch(), RandomLM(), [0, 1], 4, max_lens=[2, 5])


def test_translation_module_translates_with_exact_search():
    from seq2seq_lightning import TranslationModule
    from seq2seq_lightning.data.dates import DatesDataModule

    data = DatesDataModule(num_train=64, num_val=8, num_test=8, batch_size=32)
    data.setup("fit")
    small = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}
    torch.manual_seed(0)
    model = TranslationModule(encoder=small, decoder=small, tokenizers=data.tokenizers).eval()
    sentences = ["3 mars 1998", "Tuesday, June 25, 2009", "1/2/03", "the 1st of January, 1900"]
    out = model.translate(sentences, strategy="exact", beam_size=2)
    assert len(out) == len(sentences) and all(isinstance(s, str) for s in out)
    batch = model.make_batch([model.source_tokenizer.encode(s) for s in sentences])
    for penalty, budget in [(0.0, 100_000), (1.0, 200)]:
        exact = model.search(batch, ExactSearch(beam_size=2, length_penalty=penalty, max_expansions=budget))
        beam = model.search(batch, BeamSearch(beam_size=2, length_penalty=penalty))
        for [e], [b] in zip(exact, beam):
            assert e.score >= b.score
            if penalty == 0.0:
                assert e.optimal and e.log_prob >= b.log_prob
