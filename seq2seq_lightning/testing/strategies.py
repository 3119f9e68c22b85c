"""``check_strategy`` and the seeded toy step decoder it searches."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy
from seq2seq_lightning.testing._common import ATOL, BOS, EOS, RTOL, ProtocolError, _Report, _seeded, _subclass


class ToyStepDecoder:
    """A tiny seeded conditional language model for checking search strategies.

    The next-token log-probs are a fixed random function of (the row's context id, the generated
    prefix), computed row by row, so a row's numbers are bit-identical whatever else shares its batch.
    The EOS logit is shifted by the context (``context % 4``: some rows tend to stop at once, some run
    to ``max_len``) and grows with the prefix length; BOS is never generated (-inf). ``last_attention``
    is an (N, S) distribution that is also a function of (context, prefix). A strategy that breaks
    the ``StepDecoder`` protocol (tokens not (N,) long, a token count that does not match the state's
    rows, a first token other than BOS, a bad reorder index) gets a :class:`ProtocolError`.

    State: (N, 1 + steps) long; column 0 is the row's context id, then every token fed (BOS first).
    """

    def __init__(self, vocab_size: int = 8, src_len: int = 3, seed: int = 0, bos: int = BOS, eos: int = EOS,
                 scale: float = 2.0) -> None:
        self.vocab_size, self.src_len, self.seed, self.bos, self.eos = vocab_size, src_len, seed, bos, eos
        self.scale = scale
        self.last_attention: Tensor | None = None
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[Tensor, Tensor]] = {}

    def initial_state(self, contexts: Sequence[int]) -> Tensor:
        """(N, 1) long: the context id of each row."""
        return torch.tensor(list(contexts), dtype=torch.long)[:, None]

    def distribution(self, context: int, prefix: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(V,) float32 log-probs of the next token after ``prefix`` (generated ids, no BOS), and the
        (S,) attention of that step."""
        key = (context, prefix)
        if key not in self._cache:
            g = torch.Generator().manual_seed(zlib.crc32(repr((self.seed, context, prefix)).encode()))
            logits = torch.randn(self.vocab_size, generator=g) * self.scale  # (V,)
            logits[self.eos] += (-3.0, -1.0, 0.5, 2.0)[context % 4] + 0.5 * len(prefix)
            logits[self.bos] = -math.inf
            attention = torch.randn(self.src_len, generator=g).softmax(-1)  # (S,)
            self._cache[key] = logits.log_softmax(-1), attention
        return self._cache[key]

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (N,) long -> log-probs (N, V) float32, new state (N, 1 + steps + 1)."""
        if not isinstance(state, Tensor) or state.dim() != 2 or state.dtype != torch.long:
            raise ProtocolError(f"step() got a state that is not the decoder's own ({type(state).__name__})")
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
            raise ProtocolError(f"step() takes tokens (N,) long, got {tuple(getattr(tokens, 'shape', ()))} "
                                f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tokens.size(0) != state.size(0):
            raise ProtocolError(f"step() got {tokens.size(0)} tokens for a state of {state.size(0)} rows")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.vocab_size:
            raise ProtocolError(f"step() got token ids outside [0, {self.vocab_size}): {tokens.tolist()}")
        if state.size(1) == 1 and bool((tokens != self.bos).any()):
            raise ProtocolError(f"the first tokens fed to step() must be BOS ({self.bos}), got {tokens.tolist()}")
        state = torch.cat([state, tokens[:, None]], 1)
        rows = [self.distribution(r[0], tuple(r[2:])) for r in state.tolist()]
        if not rows:
            self.last_attention = torch.zeros(0, self.src_len)
            return torch.zeros(0, self.vocab_size), state
        self.last_attention = torch.stack([a for _, a in rows])  # (N, S)
        return torch.stack([lp for lp, _ in rows]), state  # (N, V)

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        """New row i = old row index[i]."""
        if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype != torch.long:
            raise ProtocolError(f"reorder_state() takes an index (N',) long, got {index!r}")
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < state.size(0):
            raise ProtocolError(f"reorder_state() index {index.tolist()} out of range for {state.size(0)} rows")
        return state.index_select(0, index)

    def sequence(self, tokens: Sequence[int], ended: bool) -> list[int]:
        return [*tokens, self.eos] if ended else list(tokens)

    def log_prob(self, context: int, tokens: Sequence[int], ended: bool) -> float:
        """The model's float32 log-probability of ``tokens``, plus the EOS term when ``ended``."""
        seq, total = self.sequence(tokens, ended), torch.zeros(())
        for i, tok in enumerate(seq):
            total = total + self.distribution(context, tuple(seq[:i]))[0][tok]
        return float(total)

    def attention(self, context: int, tokens: Sequence[int], ended: bool) -> Tensor:
        """(steps, S) attention of every step that produced ``tokens`` (and the EOS when ``ended``)."""
        seq = self.sequence(tokens, ended)
        return torch.stack([self.distribution(context, tuple(seq[:i]))[1] for i in range(len(seq))]) if seq \
            else torch.zeros(0, self.src_len)


def check_strategy(cls: type, **init_kwargs: Any) -> None:
    """Check a search strategy class against what every strategy must satisfy.

    Built as ``cls(**init_kwargs)`` and run over :class:`ToyStepDecoder` (seeds 0, 1, 2; batches of 4
    rows; ``max_len`` 1, 3 and 6; BOS 2, EOS 3). Properties: ``subclass of SearchStrategy``,
    ``StepDecoder protocol``, ``one list per row`` (``len(result) == batch_size``, each a non-empty
    list of Hypothesis), ``best-first`` (non-increasing score), ``token ids`` (a list of ints in the
    vocabulary), ``no EOS in tokens``, ``no BOS in tokens``, ``max_len`` (at most max_len tokens),
    ``log_prob`` (the model's log-probability of the tokens, with the EOS term when the hypothesis
    has fewer than max_len tokens), ``attention`` (when not None: the (steps, S) attention of its
    steps) and ``batch independence`` (each row searched alone gives the same hypotheses). A class
    with ``row_limits = True`` is also searched with ``max_lens`` (per-row limits 6, 1, 3, 5): the
    same properties against each row's own limit, and ``max_lens`` (each row as searched alone with
    ``max_len`` = its limit). A sampling strategy is batch-independent only with a seed: pass one.
    """
    rep = _Report("check_strategy", cls)
    _subclass(rep, cls, SearchStrategy)
    with _seeded():
        with rep.checking("builds"):
            strategy = cls(**init_kwargs)
        for seed in (0, 1, 2):
            decoder = ToyStepDecoder(seed=seed)
            contexts = [4 * seed + k for k in range(4)]
            for max_len in (1, 3, 6):
                where = f"seed {seed}, max_len={max_len}"
                batch = _search(rep, strategy, decoder, contexts, max_len, where=where)
                _check_hypotheses(rep, decoder, batch, contexts, [max_len] * len(contexts), where)
                for i, context in enumerate(contexts):
                    alone = _search(rep, strategy, decoder, [context], max_len, where=where)
                    _same_hypotheses(rep, "batch independence", alone[0], batch[i],
                                     f"{where}: row {i} searched alone against inside the batch")
            if getattr(strategy, "row_limits", False):
                limits = [6, 1, 3, 5]
                where = f"seed {seed}, max_len=6, max_lens={limits}"
                batch = _search(rep, strategy, decoder, contexts, 6, torch.tensor(limits), where)
                _check_hypotheses(rep, decoder, batch, contexts, limits, where)
                for i, (context, limit) in enumerate(zip(contexts, limits)):
                    alone = _search(rep, strategy, decoder, [context], limit, where=where)
                    _same_hypotheses(rep, "max_lens", alone[0], batch[i],
                                     f"{where}: row {i} searched alone with max_len={limit} against inside the batch")


def _search(rep: _Report, strategy: SearchStrategy, decoder: ToyStepDecoder, contexts: list[int], max_len: int,
            max_lens: Tensor | None = None, where: str = "") -> Any:
    kwargs: dict[str, Any] = {"batch_size": len(contexts), "bos": decoder.bos, "eos": decoder.eos,
                              "max_len": max_len}
    if max_lens is not None:
        kwargs["max_lens"] = max_lens
    with rep.checking("max_lens" if max_lens is not None else "search", where):
        return strategy.search(decoder, decoder.initial_state(contexts), **kwargs)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _check_hypotheses(rep: _Report, decoder: ToyStepDecoder, results: Any, contexts: list[int],
                      limits: list[int], where: str) -> None:
    B, V = len(contexts), decoder.vocab_size
    rep.require(isinstance(results, list) and len(results) == B, "one list per row",
                f"{where}: expected a list of {B} lists (one per batch row), got "
                f"{len(results) if isinstance(results, list) else type(results).__name__}")
    for i, (hyps, context, limit) in enumerate(zip(results, contexts, limits)):
        at = f"{where}, row {i}"
        rep.require(isinstance(hyps, list) and hyps and all(isinstance(h, Hypothesis) for h in hyps),
                    "one list per row", f"{at}: expected a non-empty list of Hypothesis, got {hyps!r}")
        scores = [h.score for h in hyps]
        rep.require(all(_is_number(s) for s in scores), "best-first", f"{at}: scores must be numbers, got {scores}")
        rep.require(all(a >= b for a, b in itertools.pairwise(scores)), "best-first",
                    f"{at}: scores {scores} are not in non-increasing order")
        for j, h in enumerate(hyps):
            toks, at_j = h.tokens, f"{at}, hypothesis {j}"
            rep.require(isinstance(toks, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                                       and 0 <= t < V for t in toks),
                        "token ids", f"{at_j}: tokens must be a list of ints in [0, {V}), got {toks!r}")
            rep.require(decoder.eos not in toks, "no EOS in tokens", f"{at_j}: tokens {toks} hold EOS ({decoder.eos})")
            rep.require(decoder.bos not in toks, "no BOS in tokens", f"{at_j}: tokens {toks} hold BOS ({decoder.bos})")
            rep.require(len(toks) <= limit, "max_len", f"{at_j}: {len(toks)} tokens {toks}, over the limit {limit}")
            ended = len(toks) < limit
            expected = decoder.log_prob(context, toks, ended)
            rep.require(_is_number(h.log_prob) and abs(h.log_prob - expected) <= ATOL + RTOL * abs(expected),
                        "log_prob", f"{at_j} {toks}: log_prob is {h.log_prob!r}, the model's log-probability is "
                        f"{expected:.6g} ({'EOS term included' if ended else f'closed at {limit} tokens, no EOS term'}"
                        f"; score {h.score!r})")
            if h.attention is not None:
                rep.close(torch.as_tensor(h.attention), decoder.attention(context, toks, ended), "attention",
                          f"{at_j}: attention against the decoder's last_attention of each step")


def _same_hypotheses(rep: _Report, prop: str, got: list[Hypothesis], expected: list[Hypothesis], what: str) -> None:
    def show(hyps: list[Hypothesis]) -> str:
        return "; ".join(f"{h.tokens} log_prob {h.log_prob:.6g} score {h.score:.6g}" for h in hyps)

    same = len(got) == len(expected) and all(
        a.tokens == b.tokens and math.isclose(a.log_prob, b.log_prob, rel_tol=RTOL, abs_tol=ATOL)
        and math.isclose(a.score, b.score, rel_tol=RTOL, abs_tol=ATOL) for a, b in zip(got, expected))
    rep.require(same, prop, f"{what}: alone [{show(got)}], in the batch [{show(expected)}]")
