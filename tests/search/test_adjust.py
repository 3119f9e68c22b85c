"""BeamSearch.adjust_log_probs: subclasses that forbid or penalise tokens, against exhaustive search."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from seq2seq_lightning.search import forbid_token, mask_tokens, repeated_ngram_mask
from seq2seq_lightning.search.beam import BeamSearch

from .toy import BOS, EOS, RandomLM, TinyGRUDecoder

BANNED = 3


class ForbidToken(BeamSearch):
    """Never generates BANNED."""

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        return forbid_token(log_probs, BANNED)


class NoRepeatBigram(BeamSearch):
    """Never generates a bigram twice."""

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        return mask_tokens(log_probs, repeated_ngram_mask(prefix, 2, log_probs.size(-1)))


class RepetitionPenalty(BeamSearch):
    """Ranks a token lower by 1.5 for every time it was already generated (a finite penalty)."""

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        counts = log_probs.new_zeros(log_probs.shape).scatter_add(-1, prefix, log_probs.new_ones(prefix.shape))
        return log_probs - 1.5 * counts  # (A, K, V)


class Unchanged(BeamSearch):
    """Returns a copy of the log-probs: the two sums are kept apart, with equal values."""

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        return log_probs.clone()


def reference_adjust(cls: type[BeamSearch], prefix: tuple[int, ...], logp: Tensor) -> Tensor:
    """The rule of ``cls`` for one prefix, written plainly: (V,) model log-probs -> (V,) ranking values."""
    out = logp.clone()
    for v in range(len(out)):
        if cls is ForbidToken and v == BANNED:
            out[v] = float("-inf")
        if cls is NoRepeatBigram and prefix and (prefix[-1], v) in set(itertools.pairwise(prefix)):
            out[v] = float("-inf")
        if cls is RepetitionPenalty:
            out[v] = out[v] - 1.5 * prefix.count(v)
    return out


def stepped_log_prob(decoder, state, tokens: list[int], ended: bool) -> float:
    """The model's log-probability of ``tokens`` (+ EOS when ``ended``), by stepping the decoder from BOS."""
    total, last = torch.zeros(()), BOS
    for tok in [*tokens, EOS] if ended else tokens:
        logp, state = decoder.step(torch.tensor([last]), state)
        total, last = total + logp[0, tok], tok
    return float(total)


def exhaustive(cls, dist, vocab_size: int, max_len: int, n: int, penalty: float) -> list[tuple[list[int], float]]:
    """The n best (tokens, score) of every output, ranked by the rule of ``cls``."""
    scored = []
    for length in range(max_len + 1):
        ended = length < max_len
        for seq in itertools.product([v for v in range(vocab_size) if v != EOS], repeat=length):
            full = [*seq, EOS] if ended else list(seq)
            rank = torch.zeros(())
            for i, tok in enumerate(full):
                rank = rank + reference_adjust(cls, tuple(full[:i]), dist(tuple(full[:i])))[tok]
            if rank > float("-inf"):
                steps = length + int(ended)
                scored.append((list(seq), float(rank) if penalty == 0 else float(rank) / steps**penalty))
    scored.sort(key=lambda x: x[1], reverse=True)
    return scored[:n]


def has_repeated_bigram(tokens: list[int]) -> bool:
    bigrams = list(itertools.pairwise(tokens))
    return len(bigrams) != len(set(bigrams))


@pytest.mark.parametrize("cls", [ForbidToken, NoRepeatBigram, RepetitionPenalty])
@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_wide_beam_is_exhaustive_search_under_the_rule(cls, penalty):
    vocab_size, max_len = 5, 4
    lm = RandomLM(vocab_size=vocab_size, seed=21, scale=1.5, eos_offset=-1.0, eos_bias=0.2)
    rows = [0, 1, 2]
    strategy = cls(beam_size=(vocab_size - 2) ** (max_len - 1) * vocab_size, length_penalty=penalty, n_best=3)
    results = strategy.search(lm, lm.initial_state(rows), batch_size=3, bos=BOS, eos=EOS, max_len=max_len)
    for ctx, hyps in zip(rows, results):
        want = exhaustive(cls, lambda p, c=ctx: lm.log_probs(c, p), vocab_size, max_len, 3, penalty)
        assert [h.tokens for h in hyps] == [tokens for tokens, _ in want]
        assert [h.score for h in hyps] == pytest.approx([score for _, score in want], abs=1e-5)
        for h in hyps:
            model = stepped_log_prob(lm, lm.initial_state([ctx]), h.tokens, len(h.tokens) < max_len)
            assert h.log_prob == pytest.approx(model, abs=1e-5)


@pytest.mark.parametrize("cls", [ForbidToken, NoRepeatBigram, RepetitionPenalty])
def test_outputs_obey_the_rule_and_log_prob_is_the_models(cls):
    dec = TinyGRUDecoder(vocab_size=6, src_len=4, seed=6)
    seeds = list(range(60, 70))
    max_len = 8
    strategy = cls(beam_size=4, n_best=3, length_penalty=0.6, min_len=1)
    results = strategy.search(dec, dec.initial_state(seeds), batch_size=len(seeds), bos=BOS, eos=EOS,
                              max_len=max_len)
    plain = BeamSearch(beam_size=4, n_best=3, length_penalty=0.6, min_len=1).search(
        dec, dec.initial_state(seeds), batch_size=len(seeds), bos=BOS, eos=EOS, max_len=max_len)
    for s, hyps, base in zip(seeds, results, plain):
        assert len(hyps) == 3
        for h in hyps:
            assert EOS not in h.tokens and 1 <= len(h.tokens) <= max_len
            if cls is ForbidToken:
                assert BANNED not in h.tokens
            if cls is NoRepeatBigram:
                assert not has_repeated_bigram(h.tokens)
            ended = len(h.tokens) < max_len
            assert h.log_prob == pytest.approx(stepped_log_prob(dec, dec.initial_state([s]), h.tokens, ended),
                                               abs=1e-5)
            assert h.attention.shape == (len(h.tokens) + int(ended), 4)
        if cls is RepetitionPenalty:  # the penalty lowers the score below the model's
            assert all(h.score <= h.log_prob / (len(h.tokens) + int(len(h.tokens) < max_len)) ** 0.6 + 1e-6
                       for h in hyps)
    if cls is not ForbidToken:  # the rule changed some outputs (the toy GRU does repeat itself)
        assert any([h.tokens for h in a] != [h.tokens for h in b] for a, b in zip(results, plain))


def test_plain_beam_without_the_rule_breaks_it():
    """The rules are not vacuous on this model: plain beam search emits the banned token and repeats."""
    dec = TinyGRUDecoder(vocab_size=6, src_len=4, seed=6)
    seeds = list(range(60, 70))
    results = BeamSearch(beam_size=4, n_best=3).search(dec, dec.initial_state(seeds), batch_size=len(seeds),
                                                       bos=BOS, eos=EOS, max_len=8)
    tokens = [h.tokens for hyps in results for h in hyps]
    assert any(BANNED in t for t in tokens)
    assert any(has_repeated_bigram(t) for t in tokens)


@pytest.mark.parametrize("stopping", ["exact", "early"])
def test_separate_sums_change_nothing_when_the_values_are_unchanged(stopping):
    lm = RandomLM(vocab_size=6, seed=13, eos_bias=0.3)
    rows = list(range(10))
    limits = torch.tensor([7, 3, 5, 7, 1, 6, 7, 2, 4, 7])
    kwargs = {"beam_size": 3, "n_best": 2, "length_penalty": 0.6, "min_len": 1, "stopping": stopping}
    want = BeamSearch(**kwargs).search(lm, lm.initial_state(rows), batch_size=10, bos=BOS, eos=EOS, max_len=7,
                                       max_lens=limits)
    got = Unchanged(**kwargs).search(lm, lm.initial_state(rows), batch_size=10, bos=BOS, eos=EOS, max_len=7,
                                     max_lens=limits)
    for g, w in zip(got, want):
        assert [(h.tokens, h.log_prob, h.score) for h in g] == [(h.tokens, h.log_prob, h.score) for h in w]


def test_the_hook_sees_each_hypothesis_prefix():
    seen = []

    class Recorder(BeamSearch):
        def adjust_log_probs(self, log_probs, prefix, step):
            assert prefix.shape == (*log_probs.shape[:2], step) and prefix.dtype == torch.long
            seen.append(step)
            return log_probs

    lm = RandomLM(vocab_size=5, seed=2, eos_offset=-20.0, eos_bias=0.0)  # EOS never wins: run to max_len
    [[hyp]] = Recorder(beam_size=2).search(lm, lm.initial_state([0]), batch_size=1, bos=BOS, eos=EOS, max_len=4)
    assert seen == [0, 1, 2, 3] and len(hyp.tokens) == 4
