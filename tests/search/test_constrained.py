"""Lexically constrained beam search (dynamic beam allocation) against beam and exhaustive search."""

from __future__ import annotations

import itertools

import pytest
import torch

from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.constrained import (
    ConstrainedBeamSearch,
    allocate_banks,
    phrases_found,
    suffix_progress,
    unmet_constraints,
)
from seq2seq_lightning.search.prefix import PrefixDecoder

from .toy import BEAM_SENTENCE, BOS, EOS, RandomLM, TinyGRUDecoder, jane_lm, sequence_log_prob


def run(strategy, lm, rows, max_len, constraints=None, max_lens=None):
    kwargs = {} if constraints is None else {"constraints": constraints}
    if max_lens is not None:
        kwargs["max_lens"] = torch.tensor(max_lens)
    return strategy.search(lm, lm.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS, max_len=max_len,
                           **kwargs)


def triples(results):
    return [[(h.tokens, h.log_prob, h.score) for h in hyps] for hyps in results]


def check_outputs(results, lm, rows, constraints, limits):
    """Every hypothesis holds every phrase of its row, fits its limit and carries the model's log-prob."""
    for ctx, phrases, limit, hyps in zip(rows, constraints, limits, results):
        assert hyps
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert unmet_constraints(h.tokens, phrases) == [], (h.tokens, phrases)
            assert EOS not in h.tokens and BOS not in h.tokens and len(h.tokens) <= limit
            want = sequence_log_prob(lambda p, c=ctx: lm.log_probs(c, p), h.tokens, len(h.tokens) < limit)
            assert h.log_prob == pytest.approx(want, abs=1e-5)


# -- without constraints it is beam search ----------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("beam_size", "n_best"), [(1, 1), (2, 2), (4, 1), (7, 3)])
@pytest.mark.parametrize("penalty", [0.0, 0.6, 1.0, -0.5])
def test_without_constraints_it_is_beam_search(seed, beam_size, n_best, penalty):
    lm = RandomLM(vocab_size=7, seed=seed, eos_bias=0.3)
    rows = list(range(6))
    kwargs = {"beam_size": beam_size, "n_best": n_best, "length_penalty": penalty}
    want = triples(run(BeamSearch(**kwargs), lm, rows, 9))
    assert triples(run(ConstrainedBeamSearch(**kwargs), lm, rows, 9)) == want
    assert triples(run(ConstrainedBeamSearch(**kwargs), lm, rows, 9, [[] for _ in rows])) == want


@pytest.mark.parametrize("beam_size", [2, 5])
def test_rows_without_constraints_are_beam_searched_in_a_constrained_batch(beam_size):
    lm = RandomLM(vocab_size=7, seed=3, eos_bias=0.3)
    rows = [0, 1, 2, 3, 4]
    constraints = [[[4, 5]], [], [[6], [2, 3]], [], []]
    plain = run(BeamSearch(beam_size=beam_size, n_best=2), lm, rows, 10, max_lens=[10, 4, 10, 7, 1])
    mixed = run(ConstrainedBeamSearch(beam_size=beam_size, n_best=2), lm, rows, 10, constraints,
                max_lens=[10, 4, 10, 7, 1])
    for i in (1, 3, 4):
        assert triples([mixed[i]]) == triples([plain[i]])


# -- with constraints -----------------------------------------------------------------------------------
CONSTRAINTS = [[[4, 5]], [[6], [2, 3, 4]], [[3, 3, 2], [5]], [[2], [3], [4], [5]], [[6, 2, 6]]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("beam_size", "penalty", "n_best"), [(3, 0.0, 1), (5, 1.0, 2), (8, 0.0, 3), (6, 0.6, 2)])
def test_every_output_holds_every_phrase(seed, beam_size, penalty, n_best):
    lm = RandomLM(vocab_size=7, seed=seed, eos_bias=0.5)
    rows = list(range(len(CONSTRAINTS)))
    strategy = ConstrainedBeamSearch(beam_size=beam_size, length_penalty=penalty, n_best=n_best)
    results = run(strategy, lm, rows, 12, CONSTRAINTS)
    check_outputs(results, lm, rows, CONSTRAINTS, [12] * len(rows))


def test_phrases_on_a_gru_decoder_with_attention_and_row_limits():
    dec = TinyGRUDecoder(vocab_size=9, seed=2)
    seeds = [1, 2, 3, 4]
    constraints = [[[4, 5, 6]], [[7], [8, 8]], [], [[2, 3]]]
    limits = [10, 8, 6, 5]
    results = ConstrainedBeamSearch(beam_size=6).search(
        dec, dec.initial_state(seeds), batch_size=4, bos=BOS, eos=EOS, max_len=10, max_lens=torch.tensor(limits),
        constraints=constraints)
    for seed, phrases, limit, [h] in zip(seeds, constraints, limits, results):
        assert unmet_constraints(h.tokens, phrases) == [] and len(h.tokens) <= limit
        ended = len(h.tokens) < limit
        logps, atts = dec.teacher_force(seed, h.tokens + ([EOS] if ended else []))
        steps = len(h.tokens) + int(ended)
        seq = h.tokens + [EOS] * int(ended)
        assert h.log_prob == pytest.approx(float(sum(logps[i][seq[i]] for i in range(steps))), abs=1e-5)
        torch.testing.assert_close(h.attention, torch.stack(atts[:steps]))


def exhaustive_constrained(lm, ctx, vocab_size, max_len, phrases, n, penalty=0.0):
    """The n best outputs holding every phrase: EOS-ended ones shorter than max_len, closed ones of max_len."""
    words = [i for i in range(vocab_size) if i not in (EOS, BOS)]
    found = []
    for length in range(max_len + 1):
        ended = length < max_len
        for seq in itertools.product(words, repeat=length):
            if unmet_constraints(seq, phrases):
                continue
            lp = sequence_log_prob(lambda p: lm.log_probs(ctx, p), seq, ended)
            steps = length + int(ended)
            found.append((lp if penalty == 0 else lp / steps**penalty, lp, list(seq)))
    found.sort(key=lambda x: x[0], reverse=True)
    return found[:n]


@pytest.mark.parametrize("penalty", [0.0, 1.0])
@pytest.mark.parametrize("phrases", [[[2, 3]], [[4], [2]], [[3, 3]], [[2, 4, 3]]])
def test_a_wide_beam_is_exhaustive_constrained_search(penalty, phrases):
    vocab_size, max_len = 5, 4  # words 2, 3, 4
    lm = RandomLM(vocab_size=vocab_size, seed=11, eos_offset=0.5)
    beam = 3 ** (max_len - 1) * vocab_size  # every candidate of the widest step fits
    results = run(ConstrainedBeamSearch(beam_size=beam, n_best=3, length_penalty=penalty), lm, [0, 1], max_len,
                  [phrases, phrases])
    for ctx, hyps in zip([0, 1], results):
        want = exhaustive_constrained(lm, ctx, vocab_size, max_len, phrases, 3, penalty)
        assert [h.tokens for h in hyps] == [w[2] for w in want]
        assert [h.score for h in hyps] == pytest.approx([w[0] for w in want], abs=1e-5)


def test_a_constraint_turns_beam_output_into_the_sentence_that_holds_it():
    lm = jane_lm()
    [[plain]] = run(BeamSearch(beam_size=3), lm, [0], 12)
    assert lm.decode(plain.tokens) == BEAM_SENTENCE
    [[forced]] = run(ConstrainedBeamSearch(beam_size=3), lm, [0], 12, [[lm.encode("going to")]])
    assert lm.decode(forced.tokens) == "Jane is going to be visiting Africa in September"
    [[two]] = run(ConstrainedBeamSearch(beam_size=4), lm, [0], 12, [[lm.encode("September"), lm.encode("Jane is")]])
    assert lm.decode(two.tokens) == BEAM_SENTENCE  # already met by the beam's best: unchanged


@pytest.mark.parametrize("make", [lambda: ConstrainedBeamSearch(beam_size=4, n_best=2),
                                  lambda: ConstrainedBeamSearch(beam_size=2, length_penalty=1.0)])
def test_a_row_alone_gives_what_it_gives_in_its_batch(make):
    lm = RandomLM(vocab_size=7, seed=6, eos_bias=0.4)
    rows = list(range(len(CONSTRAINTS)))
    limits = [12, 6, 9, 12, 5]
    batch = run(make(), lm, rows, 12, CONSTRAINTS, max_lens=limits)
    for i, ctx in enumerate(rows):
        alone = run(make(), lm, [ctx], limits[i], [CONSTRAINTS[i]])
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batch[i]]
        assert [h.log_prob for h in alone[0]] == pytest.approx([h.log_prob for h in batch[i]], abs=1e-6)


def test_phrases_that_cannot_fit_give_the_best_hypothesis_closed_at_the_limit():
    lm = RandomLM(vocab_size=7, seed=1)
    phrases = [[2, 3, 4, 5, 6]]  # five tokens, four steps
    [hyps] = run(ConstrainedBeamSearch(beam_size=4, n_best=2), lm, [0], 4, [phrases])
    assert hyps and all(len(h.tokens) == 4 for h in hyps)  # closed at the limit, no EOS
    assert all(unmet_constraints(h.tokens, phrases) == [0] for h in hyps)
    for h in hyps:
        assert h.log_prob == pytest.approx(sequence_log_prob(lambda p: lm.log_probs(0, p), h.tokens, False), abs=1e-5)


def test_a_hypothesis_that_meets_the_phrases_wins_over_one_that_does_not():
    """With room for the phrase, no result misses it even if a closed unconstrained one scores higher."""
    lm = RandomLM(vocab_size=7, seed=1, eos_offset=-4.0, eos_bias=0.0)  # EOS unlikely: outputs run to the limit
    [hyps] = run(ConstrainedBeamSearch(beam_size=4, n_best=3), lm, [0], 5, [[[6, 6]]])
    assert hyps and all(unmet_constraints(h.tokens, [[6, 6]]) == [] for h in hyps)


def test_constraints_in_a_forced_prefix_count():
    lm = RandomLM(vocab_size=7, seed=2)
    decoder = PrefixDecoder(lm)
    state = decoder.wrap(lm.initial_state([0, 1]), [[4, 5, 6], [2]])
    results = ConstrainedBeamSearch(beam_size=4).search(decoder, state, batch_size=2, bos=BOS, eos=EOS, max_len=8,
                                                        constraints=[[[5, 6]], [[3, 3]]])
    [a], [b] = results
    assert a.tokens[:3] == [4, 5, 6] and b.tokens[:1] == [2] and unmet_constraints(b.tokens, [[3, 3]]) == []


def test_bad_constraints_are_refused():
    lm = RandomLM(vocab_size=7, seed=0)
    with pytest.raises(ValueError, match="one entry per row"):
        run(ConstrainedBeamSearch(), lm, [0, 1], 5, [[[2]]])
    with pytest.raises(ValueError, match="no BOS/EOS"):
        run(ConstrainedBeamSearch(), lm, [0], 5, [[[2, EOS]]])
    assert triples(run(ConstrainedBeamSearch(), lm, [0], 5, [[[]]])) == triples(run(BeamSearch(), lm, [0], 5))


# -- the pieces ---------------------------------------------------------------------------------------------
def test_phrase_matching_finds_overlapping_starts_and_resets_abandoned_progress():
    phrases = torch.tensor([[[1, 1, 2], [3, -1, -1], [-1, -1, -1]]])  # "a a b", "c", an empty slot
    lengths = torch.tensor([[3, 1, 0]])
    found = phrases_found(torch.tensor([[1, 1, 1, 2]]), phrases, lengths)  # "a a a b" holds "a a b"
    assert found.tolist() == [[True, False, True]]
    assert phrases_found(torch.tensor([[1, 1, 3, 2, -1]]), phrases, lengths).tolist() == [[False, True, True]]
    progress = suffix_progress(torch.tensor([[5, 1, 1], [1, 1, 3], [-1, -1, 1]]), phrases, lengths)
    assert progress[:, 0].tolist() == [2, 0, 1]  # "a a" so far; abandoned by "c"; one "a"
    assert progress[:, 1].tolist() == [0, 1, 0]


def test_banks_share_the_beam_and_pass_unused_slots_down():
    score = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -0.5, float("-inf")]])
    bank = torch.tensor([[0, 0, 0, 0, 1, 1, 0, 2]])
    # 3 banks, width 4: shares 1, 1, 2 (the remainder on top). Bank 2 has no real candidate: its two
    # slots pass to bank 1, which has only two candidates, so one slot passes on to bank 0 (its best two)
    chosen = allocate_banks(score, bank, torch.tensor([3]), 4)
    assert chosen.nonzero()[:, 1].tolist() == [0, 4, 5, 6]
    # slots still free below bank 0 go to the best candidates left in any bank
    score = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0]])
    bank = torch.tensor([[0, 1, 1, 1, 1, 2, 2]])
    chosen = allocate_banks(score, bank, torch.tensor([3]), 6)  # shares 2, 2, 2; bank 0 fills one
    assert chosen.nonzero()[:, 1].tolist() == [0, 1, 2, 3, 5, 6]
    # rows are independent: another row's number of banks changes nothing
    two = allocate_banks(score.repeat(2, 1), torch.stack([bank[0], torch.zeros(7, dtype=torch.long)]),
                         torch.tensor([3, 1]), 6)
    assert torch.equal(two[0], chosen[0]) and two[1].nonzero()[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_unmet_constraints_names_the_missing_phrases():
    assert unmet_constraints([1, 2, 3, 2], [[2, 3], [3, 1], [], [2]]) == [1]
