"""Tiny seeded step decoders and reference computations for the search tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from seq2seq_lightning.search.base import Hypothesis

EOS, BOS = 0, 1


class PrefixLM:
    """A step decoder whose next-token log-probs are a function of (row context, generated prefix).

    State: (N, 1 + steps) long; column 0 is the row's context id, then every token fed (BOS first).
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.calls = 0  # number of step() calls
        self.rows_per_call: list[int] = []  # N of every step() call
        self._cache: dict[tuple[int, tuple[int, ...]], Tensor] = {}

    def initial_state(self, contexts: Sequence[int]) -> Tensor:
        return torch.tensor(list(contexts), dtype=torch.long)[:, None]  # (N, 1)

    def distribution(self, context: int, prefix: tuple[int, ...]) -> Tensor:
        """(V,) float32 log-probs of the next token after the generated ``prefix`` (no BOS)."""
        raise NotImplementedError

    def log_probs(self, context: int, prefix: tuple[int, ...]) -> Tensor:
        key = (context, prefix)
        if key not in self._cache:
            self._cache[key] = self.distribution(context, prefix)
        return self._cache[key]

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        self.rows_per_call.append(tokens.size(0))
        state = torch.cat([state, tokens[:, None]], 1)  # (N, 1 + steps)
        rows = [self.log_probs(int(r[0]), tuple(r[2:].tolist())) for r in state]
        return torch.stack(rows), state  # (N, V)

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)


class RandomLM(PrefixLM):
    """Seeded random logits per (context, prefix); BOS is never generated. ``eos_offset`` plus
    ``eos_bias`` per generated token is added to the EOS logit, so that outputs end early or late."""

    def __init__(self, vocab_size: int = 5, seed: int = 0, scale: float = 2.0, eos_bias: float = 0.5,
                 eos_offset: float = 0.0) -> None:
        super().__init__(vocab_size)
        self.seed, self.scale, self.eos_bias, self.eos_offset = seed, scale, eos_bias, eos_offset

    def distribution(self, context: int, prefix: tuple[int, ...]) -> Tensor:
        g = torch.Generator().manual_seed(hash((self.seed, context, prefix)) % (2**31))
        logits = torch.randn(self.vocab_size, generator=g) * self.scale  # (V,)
        logits[EOS] += self.eos_offset + self.eos_bias * len(prefix)
        logits[BOS] = float("-inf")
        return logits.log_softmax(-1)


class TableLM(PrefixLM):
    """A word-level LM given as a table: prefix (tuple of words) -> {next word: probability}.

    The remaining mass is spread evenly over the other words and EOS; prefixes not in the table get
    a uniform distribution. BOS is never generated.
    """

    def __init__(self, words: Sequence[str], table: dict[tuple[str, ...], dict[str, float]]) -> None:
        self.words = ["<eos>", "<bos>", *words]
        super().__init__(len(self.words))
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.table = table

    def encode(self, sentence: str) -> list[int]:
        return [self.ids[w] for w in sentence.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def distribution(self, context: int, prefix: tuple[int, ...]) -> Tensor:
        given = self.table.get(tuple(self.words[i] for i in prefix), {})
        others = [i for i in range(self.vocab_size) if i != BOS and self.words[i] not in given]
        probs = torch.zeros(self.vocab_size, dtype=torch.float64)
        for w, p in given.items():
            probs[self.ids[w]] = p
        probs[others] = (1.0 - sum(given.values())) / len(others)
        return probs.log().float()


class ConstantLM:
    """Same next-token distribution at every step; state is a dummy (N, 1) tensor."""

    def __init__(self, probs: Sequence[float]) -> None:
        self.logp = torch.tensor(probs, dtype=torch.float64).log().float()  # (V,)

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.logp.expand(tokens.size(0), -1).clone(), state

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)


class TinyGRUDecoder(nn.Module):
    """A seeded GRU-cell decoder over a random per-row "memory" (S, H), with dot-product attention
    exposed as ``last_attention`` (N, S). State: (h (N, H), memory (N, S, H))."""

    def __init__(self, vocab_size: int = 5, hidden: int = 8, src_len: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.src_len, self.hidden = src_len, hidden
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab_size, hidden)
            self.cell = nn.GRUCell(hidden, hidden)
            self.out = nn.Linear(2 * hidden, vocab_size)
        self.last_attention: Tensor | None = None

    def initial_state(self, row_seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
        memory = torch.stack([torch.randn(self.src_len, self.hidden, generator=torch.Generator().manual_seed(s))
                              for s in row_seeds])  # (N, S, H)
        return memory.mean(1), memory

    @torch.no_grad()
    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, memory = state
        h = self.cell(self.embed(tokens), h)  # (N, H)
        attn = torch.einsum("nsh,nh->ns", memory, h).softmax(-1)  # (N, S)
        ctx = torch.einsum("ns,nsh->nh", attn, memory)  # (N, H)
        self.last_attention = attn
        logits = 3.0 * self.out(torch.cat([h, ctx], -1))  # (N, V)
        logits[:, BOS] = float("-inf")
        return logits.log_softmax(-1), (h, memory)

    def reorder_state(self, state: tuple[Tensor, Tensor], index: Tensor) -> tuple[Tensor, Tensor]:
        return tuple(s.index_select(0, index) for s in state)

    def teacher_force(self, row_seed: int, tokens: Sequence[int]) -> tuple[list[Tensor], list[Tensor]]:
        """Feed BOS + tokens for one row: per step (V,) log-probs and (S,) attention."""
        state = self.initial_state([row_seed])
        logps, atts = [], []
        for tok in [BOS, *tokens]:
            logp, state = self.step(torch.tensor([tok]), state)
            logps.append(logp[0])
            atts.append(self.last_attention[0])
        return logps, atts


def gru_distribution(decoder: TinyGRUDecoder, row_seed: int) -> Callable[[tuple[int, ...]], Tensor]:
    """prefix -> (V,) next-token log-probs of one GRU row, for :func:`exhaustive_nbest`."""
    return lambda prefix: decoder.teacher_force(row_seed, prefix)[0][-1]


def sequence_log_prob(dist: Callable[[tuple[int, ...]], Tensor], tokens: Sequence[int], ended: bool) -> float:
    """Sum of float32 log-probs of ``tokens`` (plus EOS if ``ended``) under ``dist(prefix) -> (V,)``."""
    total = torch.zeros(())
    seq = [*tokens, EOS] if ended else list(tokens)
    for i, tok in enumerate(seq):
        total = total + dist(tuple(seq[:i]))[tok]
    return float(total)


def exhaustive_nbest(dist: Callable[[tuple[int, ...]], Tensor], vocab_size: int, max_len: int, n: int,
                     penalty: float = 0.0, min_len: int = 0) -> list[Hypothesis]:
    """Score every possible output and return the n best: all sequences of non-EOS tokens shorter than
    max_len (at least min_len) followed by EOS, and all sequences of max_len non-EOS tokens, closed."""
    words = [i for i in range(vocab_size) if i != EOS]
    hyps = []
    for length in range(min_len, max_len + 1):
        ended = length < max_len
        for seq in itertools.product(words, repeat=length):
            lp = sequence_log_prob(dist, seq, ended)
            if lp == float("-inf"):
                continue
            steps = length + int(ended)
            score = lp if penalty == 0 else lp / steps**penalty
            hyps.append(Hypothesis(tokens=list(seq), log_prob=lp, score=score))
    hyps.sort(key=lambda h: h.score, reverse=True)
    return hyps[:n]


def assert_consistent(hyp: Hypothesis, dist: Callable[[tuple[int, ...]], Tensor], max_len: int,
                      min_len: int = 0) -> None:
    """Check a hypothesis against the contract: no EOS inside, within max_len, at least min_len tokens
    unless closed, and log_prob = model log-probs of its tokens (+ EOS unless closed at max_len)."""
    assert EOS not in hyp.tokens
    assert min(min_len, max_len) <= len(hyp.tokens) <= max_len
    ended = len(hyp.tokens) < max_len
    assert abs(hyp.log_prob - sequence_log_prob(dist, hyp.tokens, ended)) < 1e-5


GREEDY_SENTENCE = "Jane is going to be visiting Africa in September"
BEAM_SENTENCE = "Jane is visiting Africa in September"
JANE_WORDS = GREEDY_SENTENCE.split()  # every word of both sentences


def jane_lm() -> TableLM:
    """P(going | Jane is) > P(visiting | Jane is), but the short sentence is the more likely one:
    greedy 0.9·0.9·0.5·0.6·0.6·0.6·0.9·0.9·0.9·0.9 ≈ 0.057 < beam 0.9·0.9·0.4·0.9·0.9·0.9·0.9 ≈ 0.21."""
    def prefix(sentence: str) -> tuple[str, ...]:
        return tuple(sentence.split())

    return TableLM(JANE_WORDS, {
        (): {"Jane": 0.9},
        prefix("Jane"): {"is": 0.9},
        prefix("Jane is"): {"going": 0.5, "visiting": 0.4},
        prefix("Jane is going"): {"to": 0.6},
        prefix("Jane is going to"): {"be": 0.6},
        prefix("Jane is going to be"): {"visiting": 0.6},
        prefix("Jane is going to be visiting"): {"Africa": 0.9},
        prefix("Jane is going to be visiting Africa"): {"in": 0.9},
        prefix("Jane is going to be visiting Africa in"): {"September": 0.9},
        prefix("Jane is going to be visiting Africa in September"): {"<eos>": 0.9},
        prefix("Jane is visiting"): {"Africa": 0.9},
        prefix("Jane is visiting Africa"): {"in": 0.9},
        prefix("Jane is visiting Africa in"): {"September": 0.9},
        prefix("Jane is visiting Africa in September"): {"<eos>": 0.9},
    })


def reference_beam_search(dist: Callable[[tuple[int, ...]], Tensor], beam_size: int, n_best: int,
                          max_len: int, penalty: float = 0.0, min_len: int = 0) -> list[Hypothesis]:
    """The beam algorithm of one row, written plainly: per step take the 2K best candidates, EOS ones
    ranked below K finish, the first K others stay live; stop once no live hypothesis can beat the
    n-th best finished one. Sums stay float32 so results match the batched version bit for bit."""
    def normalize(lp: float, length: int) -> float:
        return lp if penalty == 0 else lp / length**penalty

    live: list[tuple[tuple[int, ...], Tensor]] = [((), torch.zeros(()))]
    finished: list[Hypothesis] = []
    for t in range(max_len):
        cands = []
        for prefix, lp in live:
            logp = dist(prefix).clone()
            if t < min_len:
                logp[EOS] = float("-inf")
            cands += [(lp + logp[v], prefix, v) for v in range(len(logp))]
        cands.sort(key=lambda c: float(c[0]), reverse=True)
        top = [c for c in cands[:2 * beam_size] if float(c[0]) > float("-inf")]
        for rank, (lp, prefix, v) in enumerate(top):
            if v == EOS and rank < beam_size:
                finished.append(Hypothesis(list(prefix), float(lp), normalize(float(lp), t + 1)))
        live = [(prefix + (v,), lp) for lp, prefix, v in top if v != EOS][:beam_size]
        if t + 1 == max_len:
            finished += [Hypothesis(list(p), float(lp), normalize(float(lp), max_len)) for p, lp in live]
        finished = sorted(finished, key=lambda h: h.score, reverse=True)[:n_best]
        if not live:
            break
        if penalty > 0:
            bound = max(normalize(float(lp), max_len) for _, lp in live)
        else:
            bound = max(normalize(float(lp), min(t + 2, max_len)) for _, lp in live)
        if len(finished) == n_best and finished[-1].score >= bound:
            break
    return finished
