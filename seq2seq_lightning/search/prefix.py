"""Prefix forcing: every output of a row starts with given tokens, whatever the search strategy.

:class:`PrefixDecoder` wraps a step decoder. While a row is inside its prefix, every next-token
log-prob except the forced token's is set to -inf, and the forced token keeps the model's own
log-prob. Any strategy that never picks a -inf token (greedy, beam, sampling, exact search, the
plugins built on them) therefore generates the prefix first and then searches freely, and
:attr:`~seq2seq_lightning.search.base.Hypothesis.log_prob` stays the model's log-probability of
the whole output, prefix included (what forced decoding of that output gives).

A row's limit must leave room for its prefix: :func:`prefix_limits` raises each row's step limit
to at least ``len(prefix) + 1`` (the prefix and an EOS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import StepDecoder
from seq2seq_lightning.search.functional import NEG_INF, infer_device


@dataclass
class PrefixState:
    """The search state of a :class:`PrefixDecoder`: the wrapped decoder's state and, per row, the
    tokens it must still produce.

    Attributes:
        inner: the wrapped decoder's state of the N rows (first, so that
            :func:`~seq2seq_lightning.search.functional.infer_device` finds its tensors first).
        forced: (N, P) long, each row's prefix, padded (P = the longest prefix, at least 1).
        length: (N,) long, each row's prefix length (0: nothing forced).
        position: (N,) long, tokens each row has generated so far.
    """

    inner: Any
    forced: Tensor
    length: Tensor
    position: Tensor


class PrefixDecoder:
    """A step decoder that forces each row's output to start with that row's prefix.

    ``step`` runs the wrapped decoder and, for every row still inside its prefix, keeps only the
    forced token (its own log-prob; the rest -inf). ``reorder_state`` reorders the wrapper's per-row
    fields with the wrapped state, so rows may be repeated, dropped or stepped at different depths
    (each row counts its own position). Other attributes (``last_attention``, ``parameters``, ...)
    are the wrapped decoder's.

    If the model gives a forced token probability zero (-inf), every next token of that row is -inf
    at that step: the row has no finite-probability output, and what a strategy returns for it is
    up to the strategy (beam search returns no hypothesis for it).

    Args:
        decoder: the step decoder to wrap.
    """

    def __init__(self, decoder: StepDecoder) -> None:
        self.decoder = decoder

    def __getattr__(self, name: str) -> Any:
        if name == "decoder":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.decoder, name)

    def wrap(self, state: Any, prefixes: Sequence[Sequence[int]]) -> PrefixState:
        """The wrapper's state for the N rows of ``state``, row i forced to start with ``prefixes[i]``
        (token ids, no BOS; an empty prefix forces nothing)."""
        device = infer_device(self.decoder, state)
        width = max([len(p) for p in prefixes] + [1])
        forced = torch.zeros(len(prefixes), width, dtype=torch.long)
        for i, p in enumerate(prefixes):
            forced[i, : len(p)] = torch.as_tensor(list(p), dtype=torch.long)
        length = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
        return PrefixState(state, forced.to(device), length.to(device), torch.zeros_like(length, device=device))

    def step(self, tokens: Tensor, state: PrefixState) -> tuple[Tensor, PrefixState]:
        """tokens (N,) long -> log-probs (N, V), the forced rows masked to their forced token."""
        logp, inner = self.decoder.step(tokens, state.inner)  # (N, V)
        pos = state.position.to(logp.device)
        length, forced = state.length.to(logp.device), state.forced.to(logp.device)
        logp = force_tokens(logp, forced, length, pos)
        return logp, dataclasses.replace(state, inner=inner, position=state.position + 1)

    def reorder_state(self, state: PrefixState, index: Tensor) -> PrefixState:
        """New row i = old row ``index[i]``, for the wrapped state and the per-row fields alike."""
        own = index.to(state.length.device)
        return PrefixState(self.decoder.reorder_state(state.inner, index), state.forced.index_select(0, own),
                           state.length.index_select(0, own), state.position.index_select(0, own))


def force_tokens(log_probs: Tensor, forced: Tensor, length: Tensor, position: Tensor) -> Tensor:
    """log_probs (N, V) with every token but the forced one at -inf in the rows inside their prefix.

    forced (N, P) long, length (N,) long, position (N,) long: row i is forced while
    ``position[i] < length[i]``, to ``forced[i, position[i]]``, which keeps its own log-prob.
    """
    inside = position < length  # (N,)
    if not bool(inside.any()):
        return log_probs
    token = forced.gather(1, position.clamp(max=forced.size(1) - 1)[:, None])  # (N, 1)
    if int(token.max()) >= log_probs.size(-1) or int(token.min()) < 0:
        raise ValueError(f"a forced prefix token is outside the vocabulary [0, {log_probs.size(-1)}): "
                         f"{token[inside].flatten().tolist()}")
    keep = torch.zeros_like(log_probs, dtype=torch.bool).scatter_(1, token, True)  # (N, V)
    return log_probs.masked_fill(inside[:, None] & ~keep, NEG_INF)


def prefix_limits(limits: Tensor, prefixes: Sequence[Sequence[int]]) -> Tensor:
    """(B,) long step limits raised so that each row's prefix fits with an EOS after it:
    ``max(limit, len(prefix) + 1)`` (rows with an empty prefix keep their limit)."""
    need = torch.tensor([len(p) + 1 if len(p) else 0 for p in prefixes], dtype=torch.long, device=limits.device)
    return torch.maximum(limits, need)


def forcing_ids(tokenizer: Any, count: int, prefixes: Sequence[str | None] | None,
                constraints: Sequence[Sequence[str] | None] | None) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Per-input prefixes and constraint phrases (target text, None or empty for none) as target token
    ids: ``(prefix_ids, phrase_ids)``, one entry per input, empty phrases dropped. Either list, when
    given, must have ``count`` entries (a ValueError otherwise)."""
    for name, given in (("prefixes", prefixes), ("constraints", constraints)):
        if given is not None and len(given) != count:
            raise ValueError(f"{name} must have one entry per sentence ({count}), got {len(given)}")
    prefix_ids = [tokenizer.encode(p) if p else [] for p in prefixes or [None] * count]
    phrase_ids = [[ids for ids in tokenizer.encode_batch(c) if ids] if c else []
                  for c in constraints or [None] * count]
    return prefix_ids, phrase_ids
