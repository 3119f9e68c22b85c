"""Diverse beam search against the search contract, the built-in beam search and exhaustive search."""

from __future__ import annotations

import itertools

import pytest
import torch
from seq2seq_diverse_beam import DiverseBeamSearch
from torch import Tensor, nn

from seq2seq_lightning.registry import STRATEGIES
from seq2seq_lightning.search import Hypothesis, SearchStrategy, StepDecoder

EOS, BOS = 0, 1


class MarkovLM:
    """A seeded step decoder: the next-token log-probs depend on (row context, step, last token).

    State (N, 2) long: the row's context id and the number of steps taken. The EOS logit grows with
    ``eos_slope`` per step; BOS is never generated.
    """

    def __init__(self, vocab_size: int = 8, contexts: int = 64, max_steps: int = 12, seed: int = 0,
                 scale: float = 2.0, eos_slope: float = 0.4, eos_offset: float = -1.0) -> None:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(contexts, max_steps, vocab_size, vocab_size, generator=g) * scale
        logits[..., EOS] += eos_offset + eos_slope * torch.arange(max_steps, dtype=torch.float32)[None, :, None]
        logits[..., BOS] = float("-inf")
        self.table = logits.log_softmax(-1)  # (C, T, V_last, V_next)
        self.vocab_size = vocab_size
        self.calls = 0

    def initial_state(self, contexts: list[int]) -> Tensor:
        return torch.stack([torch.tensor(contexts), torch.zeros(len(contexts), dtype=torch.long)], 1)

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        logp = self.table[state[:, 0], state[:, 1], tokens]  # (N, V)
        return logp, torch.stack([state[:, 0], state[:, 1] + 1], 1)

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)

    def sequence_log_prob(self, context: int, tokens: list[int], ended: bool) -> float:
        """float32 sum of the model's log-probs of ``tokens`` (+ EOS when ``ended``), step by step."""
        total, last = torch.zeros(()), BOS
        for t, tok in enumerate([*tokens, EOS] if ended else tokens):
            total = total + self.table[context, t, last, tok]
            last = tok
        return float(total)


class AttentionGRU(nn.Module):
    """A seeded GRU-cell decoder attending over a random per-row memory; exposes ``last_attention``.

    State: (hidden (N, H), memory (N, S, H)).
    """

    def __init__(self, vocab_size: int = 7, hidden: int = 8, source_len: int = 5, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab_size, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.out = nn.Linear(2 * hidden, vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
        self.source_len, self.hidden = source_len, hidden
        self.last_attention: Tensor | None = None

    def initial_state(self, seeds: list[int]) -> tuple[Tensor, Tensor]:
        memory = torch.stack([torch.randn(self.source_len, self.hidden, generator=torch.Generator().manual_seed(s))
                              for s in seeds])  # (N, S, H)
        return memory.mean(1), memory

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hidden, memory = state
        hidden = self.cell(self.embed(tokens), hidden)  # (N, H)
        weights = torch.einsum("nsh,nh->ns", memory, hidden).softmax(-1)  # (N, S)
        context = torch.einsum("ns,nsh->nh", weights, memory)  # (N, H)
        self.last_attention = weights
        logits = 2.0 * self.out(torch.cat([hidden, context], -1))  # (N, V)
        logits[:, BOS] = float("-inf")
        return logits.log_softmax(-1), (hidden, memory)

    def reorder_state(self, state: tuple[Tensor, Tensor], index: Tensor) -> tuple[Tensor, Tensor]:
        return state[0].index_select(0, index), state[1].index_select(0, index)


def run(strategy: SearchStrategy, decoder, rows: list[int], max_len: int) -> list[list[Hypothesis]]:
    return strategy.search(decoder, decoder.initial_state(rows), batch_size=len(rows), bos=BOS, eos=EOS,
                           max_len=max_len)


def distinct_first_tokens(results: list[list[Hypothesis]]) -> float:
    return sum(len({h.tokens[0] for h in row if h.tokens}) for row in results) / len(results)


def test_registered_through_the_entry_point() -> None:
    STRATEGIES.reload()
    assert STRATEGIES.get("diverse_beam") is DiverseBeamSearch
    entry = next(e for e in STRATEGIES.entries() if e.name == "diverse_beam")
    assert entry.dist == "seq2seq-diverse-beam"
    built = STRATEGIES.build("diverse_beam", beam_size=6, num_groups=3)
    assert isinstance(built, SearchStrategy) and built.num_groups == 3
    assert isinstance(MarkovLM(), StepDecoder) and isinstance(AttentionGRU(), StepDecoder)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("beam_size", "penalty", "min_len"), [(1, 0.0, 0), (3, 0.0, 0), (4, 0.7, 2), (4, -0.5, 0)])
def test_one_group_is_the_builtin_beam(seed: int, beam_size: int, penalty: float, min_len: int) -> None:
    lm = MarkovLM(seed=seed)
    rows = list(range(24))
    kwargs = {"beam_size": beam_size, "length_penalty": penalty, "n_best": beam_size, "min_len": min_len}
    want = run(STRATEGIES.build("beam", **kwargs), lm, rows, max_len=9)
    got = run(DiverseBeamSearch(num_groups=1, diversity_strength=0.0, **kwargs), lm, rows, max_len=9)
    for g, w in zip(got, want):
        assert [h.tokens for h in g] == [h.tokens for h in w]
        assert [h.log_prob for h in g] == [h.log_prob for h in w]
        assert [h.score for h in g] == [h.score for h in w]


def test_one_group_is_the_builtin_beam_with_attention() -> None:
    dec = AttentionGRU(seed=3)
    seeds = list(range(10))
    want = run(STRATEGIES.build("beam", beam_size=3, n_best=2), dec, seeds, max_len=7)
    got = run(DiverseBeamSearch(beam_size=3, num_groups=1, diversity_strength=0.0, n_best=2), dec, seeds, max_len=7)
    for g, w in zip(got, want):
        assert [(h.tokens, h.log_prob) for h in g] == [(h.tokens, h.log_prob) for h in w]
        for hg, hw in zip(g, w):
            torch.testing.assert_close(hg.attention, hw.attention)


def test_wide_single_group_is_exhaustive_search() -> None:
    lm = MarkovLM(vocab_size=5, seed=4, eos_offset=0.0)
    max_len, words = 3, [2, 3, 4]
    strategy = DiverseBeamSearch(beam_size=5 * 3**2, num_groups=1, n_best=3)
    for ctx, hyps in zip([0, 1, 2], run(strategy, lm, [0, 1, 2], max_len)):
        every = [(lm.sequence_log_prob(ctx, list(seq), n < max_len), list(seq))
                 for n in range(max_len + 1) for seq in itertools.product(words, repeat=n)]
        every.sort(key=lambda x: x[0], reverse=True)
        assert [h.tokens for h in hyps] == [seq for _, seq in every[:3]]


@pytest.mark.parametrize("strength", [1.0, 3.0])
def test_diversity_gives_more_distinct_first_tokens(strength: float) -> None:
    rows = list(range(64))
    for seed in (0, 1):
        lm = MarkovLM(seed=seed)
        plain = distinct_first_tokens(run(STRATEGIES.build("beam", beam_size=4, n_best=4), lm, rows, 8))
        diverse = distinct_first_tokens(
            run(DiverseBeamSearch(beam_size=4, num_groups=4, diversity_strength=strength, n_best=4), lm, rows, 8))
        assert diverse > plain + 0.25, (seed, plain, diverse)


def test_groups_start_apart() -> None:
    """With a strong penalty the first step of every group picks a token no earlier group picked."""
    lm = MarkovLM(seed=5, eos_offset=-20.0, eos_slope=0.0)  # no EOS: every group keeps its beam
    strategy = DiverseBeamSearch(beam_size=4, num_groups=4, diversity_strength=100.0, n_best=4)
    out = run(strategy, lm, list(range(16)), max_len=1)
    for row in out:
        assert len(row) == 4 and len({h.tokens[0] for h in row}) == 4


@pytest.mark.parametrize(("groups", "strength", "penalty", "min_len"),
                         [(2, 0.5, 0.0, 0), (4, 2.0, 1.0, 2), (2, 0.0, 0.0, 0), (3, 1.0, -0.5, 1)])
def test_hypotheses_follow_the_contract(groups: int, strength: float, penalty: float, min_len: int) -> None:
    lm = MarkovLM(seed=6)
    rows, max_len, beam = list(range(32)), 7, 12
    strategy = DiverseBeamSearch(beam_size=beam, num_groups=groups, diversity_strength=strength,
                                 length_penalty=penalty, n_best=5, min_len=min_len)
    results = run(strategy, lm, rows, max_len)
    assert len(results) == len(rows)
    for ctx, hyps in zip(rows, results):
        assert 1 <= len(hyps) <= 5
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)  # no duplicates
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert EOS not in h.tokens and BOS not in h.tokens
            assert min_len <= len(h.tokens) <= max_len
            ended = len(h.tokens) < max_len
            assert h.log_prob == pytest.approx(lm.sequence_log_prob(ctx, h.tokens, ended), abs=1e-5)
            steps = len(h.tokens) + int(ended)
            assert h.score == pytest.approx(h.log_prob / steps**penalty if penalty else h.log_prob, abs=1e-5)


def test_attention_has_one_row_per_step() -> None:
    dec = AttentionGRU(seed=1)
    results = run(DiverseBeamSearch(beam_size=4, num_groups=2, diversity_strength=1.0, n_best=4), dec,
                  list(range(6)), max_len=6)
    for hyps in results:
        for h in hyps:
            steps = len(h.tokens) + int(len(h.tokens) < 6)
            assert h.attention is not None and h.attention.shape == (steps, dec.source_len)
            torch.testing.assert_close(h.attention.sum(-1), torch.ones(steps))


def test_rows_do_not_depend_on_their_batch() -> None:
    lm = MarkovLM(seed=7)
    strategy = DiverseBeamSearch(beam_size=6, num_groups=3, diversity_strength=0.8, n_best=4)
    rows = [5, 0, 9, 3, 3, 11]
    batched = run(strategy, lm, rows, max_len=8)
    for i, ctx in enumerate(rows):
        alone = run(strategy, lm, [ctx], max_len=8)[0]
        assert [(h.tokens, h.log_prob, h.score) for h in alone] == \
               [(h.tokens, h.log_prob, h.score) for h in batched[i]]


def test_one_decoder_call_per_step_and_early_stop() -> None:
    lm = MarkovLM(seed=8, eos_offset=3.0)  # EOS likely from the start: rows finish early
    run(DiverseBeamSearch(beam_size=4, num_groups=2, n_best=1), lm, list(range(8)), max_len=10)
    assert lm.calls < 10


def test_max_len_one_and_invalid_arguments() -> None:
    lm = MarkovLM(seed=9)
    out = run(DiverseBeamSearch(beam_size=2, num_groups=2, n_best=2), lm, [0, 1], max_len=1)
    assert all(1 <= len(row) <= 2 and all(len(h.tokens) <= 1 for h in row) for row in out)
    with pytest.raises(ValueError, match="max_len"):
        run(DiverseBeamSearch(), lm, [0], max_len=0)
    for bad in ({"beam_size": 0}, {"beam_size": 4, "num_groups": 3}, {"num_groups": 0},
                {"diversity_strength": -1.0}, {"n_best": 5}, {"min_len": -1}):
        with pytest.raises(ValueError):
            DiverseBeamSearch(**bad)


def test_per_row_limits_equal_searching_each_row_alone() -> None:
    lm = MarkovLM(seed=10)
    strategy = DiverseBeamSearch(beam_size=4, num_groups=2, diversity_strength=1.0, n_best=3, length_penalty=0.6)
    rows, limits = [3, 1, 4, 1, 5], torch.tensor([2, 7, 1, 5, 7])
    together = strategy.search(lm, lm.initial_state(rows), batch_size=5, bos=BOS, eos=EOS, max_len=7,
                               max_lens=limits)
    for ctx, limit, hyps in zip(rows, limits.tolist(), together):
        alone = run(strategy, lm, [ctx], max_len=limit)[0]
        assert [(h.tokens, h.log_prob, h.score) for h in hyps] == [(h.tokens, h.log_prob, h.score) for h in alone]
        assert all(len(h.tokens) <= limit for h in hyps)
