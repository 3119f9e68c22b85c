"""Prefix forcing: every strategy's outputs start with the prefix, scored as the model scores them."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.constrained import ConstrainedBeamSearch
from seq2seq_lightning.search.greedy import GreedySearch
from seq2seq_lightning.search.prefix import PrefixDecoder, PrefixState, force_tokens, prefix_limits
from seq2seq_lightning.search.sampling import SamplingSearch

from .toy import BOS, EOS, RandomLM, TinyGRUDecoder, sequence_log_prob

HAS_EXACT = importlib.util.find_spec("seq2seq_lightning.search.exact") is not None


def exact(**kwargs):
    from seq2seq_lightning.search.exact import ExactSearch

    return ExactSearch(**kwargs)


STRATEGIES = [
    pytest.param(lambda: GreedySearch(), id="greedy"),
    pytest.param(lambda: BeamSearch(beam_size=4, n_best=3), id="beam"),
    pytest.param(lambda: BeamSearch(beam_size=3, length_penalty=1.0, stopping="early"), id="beam-penalty"),
    pytest.param(lambda: SamplingSearch(seed=3, num_samples=3), id="sampling"),
    pytest.param(lambda: ConstrainedBeamSearch(beam_size=4), id="constrained_beam"),
    pytest.param(lambda: exact(beam_size=2, max_expansions=5000), id="exact",
                 marks=pytest.mark.skipif(not HAS_EXACT, reason="search/exact.py is not there")),
]
PREFIXES = [[4, 4, 4], [], [2], [5, 3, 6, 2, 4]]


def forced_search(strategy, lm, rows, prefixes, max_len, max_lens=None):
    decoder = PrefixDecoder(lm)
    state = decoder.wrap(lm.initial_state(rows), prefixes)
    kwargs = {} if max_lens is None else {"max_lens": max_lens}
    return strategy.search(decoder, state, batch_size=len(rows), bos=BOS, eos=EOS, max_len=max_len, **kwargs)


@pytest.mark.parametrize("make", STRATEGIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_outputs_start_with_the_prefix_and_log_prob_is_the_models(make, seed):
    lm = RandomLM(vocab_size=7, seed=seed, eos_bias=0.4)
    rows, max_len = [0, 1, 2, 3], 8
    results = forced_search(make(), lm, rows, PREFIXES, max_len)
    assert len(results) == len(rows)
    for ctx, prefix, hyps in zip(rows, PREFIXES, results):
        assert hyps
        for h in hyps:
            assert h.tokens[: len(prefix)] == prefix
            assert EOS not in h.tokens and len(h.tokens) <= max_len
            want = sequence_log_prob(lambda p, c=ctx: lm.log_probs(c, p), h.tokens, len(h.tokens) < max_len)
            assert h.log_prob == pytest.approx(want, abs=1e-5)  # forced decoding of the whole output


@pytest.mark.parametrize("make", STRATEGIES)
def test_a_row_alone_gives_what_it_gives_in_its_batch(make):
    lm = RandomLM(vocab_size=7, seed=4)
    rows = [0, 1, 2, 3]
    batch = forced_search(make(), lm, rows, PREFIXES, 7)
    for i, (ctx, prefix) in enumerate(zip(rows, PREFIXES)):
        [alone] = forced_search(make(), lm, [ctx], [prefix], 7)
        assert [h.tokens for h in alone] == [h.tokens for h in batch[i]]
        assert [h.log_prob for h in alone] == pytest.approx([h.log_prob for h in batch[i]], abs=1e-6)


def test_an_empty_prefix_changes_nothing():
    lm = RandomLM(vocab_size=6, seed=2)
    rows = [0, 1, 2]
    for strategy in (GreedySearch(), BeamSearch(beam_size=3, n_best=2)):
        plain = strategy.search(lm, lm.initial_state(rows), batch_size=3, bos=BOS, eos=EOS, max_len=6)
        forced = forced_search(strategy, lm, rows, [[], [], []], 6)
        assert [[(h.tokens, h.log_prob, h.score) for h in r] for r in plain] == \
            [[(h.tokens, h.log_prob, h.score) for h in r] for r in forced]


def test_the_greedy_continuation_is_greedy_from_the_prefix():
    """After the prefix, greedy search picks the arg-max of the model's distribution given it."""
    lm = RandomLM(vocab_size=6, seed=5, eos_bias=0.6)
    [[h]] = forced_search(GreedySearch(), lm, [0], [[3, 2]], 9)
    for i in range(2, len(h.tokens)):
        assert int(lm.log_probs(0, tuple(h.tokens[:i])).argmax()) == h.tokens[i]
    if len(h.tokens) < 9:
        assert int(lm.log_probs(0, tuple(h.tokens)).argmax()) == EOS


def test_per_row_limits_and_attention_pass_through():
    dec = TinyGRUDecoder(vocab_size=6, seed=1)
    seeds = [10, 11, 12]
    prefixes = [[2, 3], [], [4, 4, 4]]
    limits = torch.tensor([3, 2, 5])
    decoder = PrefixDecoder(dec)
    results = BeamSearch(beam_size=2).search(decoder, decoder.wrap(dec.initial_state(seeds), prefixes),
                                             batch_size=3, bos=BOS, eos=EOS, max_len=5, max_lens=limits)
    for seed, prefix, limit, [h] in zip(seeds, prefixes, limits.tolist(), results):
        assert h.tokens[: len(prefix)] == prefix and len(h.tokens) <= limit
        ended = len(h.tokens) < limit
        _, atts = dec.teacher_force(seed, h.tokens + ([EOS] if ended else []))
        torch.testing.assert_close(h.attention, torch.stack(atts[: len(h.tokens) + int(ended)]))


def test_reorder_state_moves_the_wrappers_rows_too():
    lm = RandomLM(vocab_size=6, seed=0)
    decoder = PrefixDecoder(lm)
    state = decoder.wrap(lm.initial_state([0, 1]), [[4, 5], [3]])
    _, state = decoder.step(torch.tensor([BOS, BOS]), state)
    state = decoder.reorder_state(state, torch.tensor([1, 0, 0]))
    assert isinstance(state, PrefixState)
    assert state.length.tolist() == [1, 2, 2] and state.position.tolist() == [1, 1, 1]
    logp, _ = decoder.step(torch.tensor([3, 4, 4]), state)
    assert torch.isfinite(logp[0]).sum() == 6 - 1  # row 1 is past its prefix: only BOS is -inf
    assert torch.isfinite(logp[1]).nonzero().flatten().tolist() == [5]  # row 0's second forced token


def test_a_prefix_token_outside_the_vocabulary_is_refused():
    lm = RandomLM(vocab_size=5, seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        forced_search(GreedySearch(), lm, [0], [[7]], 4)


def test_force_tokens_keeps_the_forced_log_prob():
    logp = torch.randn(3, 5).log_softmax(-1)
    forced = torch.tensor([[2, 4], [1, 0], [3, 3]])
    out = force_tokens(logp, forced, torch.tensor([2, 0, 1]), torch.tensor([1, 0, 1]))
    assert out[0, 4] == logp[0, 4] and torch.isinf(out[0]).sum() == 4
    assert torch.equal(out[1:], logp[1:])  # row 1 forces nothing, row 2 is past its prefix


def test_prefix_limits_make_room_for_the_prefix_and_an_eos():
    limits = prefix_limits(torch.tensor([10, 3, 5]), [[1, 2], [4, 4, 4, 4, 4], []])
    assert limits.tolist() == [10, 6, 5]
