"""Small pure functions for the decoding math of search strategies: the public building blocks.

Every built-in strategy is written from these, and a plugin strategy can use them too (see
``docs/search-blocks.md``). None of them keeps state or loops over rows in Python.

Shapes: ``N`` rows (batch, or batch × beam flattened), ``A`` batch rows still searching, ``K``
beams per row, ``V`` vocabulary size, ``T`` the step limit, ``S`` source positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

NEG_INF = float("-inf")

__all__ = [
    "NEG_INF", "beam_candidates", "best_reachable_score", "check_max_len", "forbid_token", "infer_device", "inverse_cdf_sample",
    "last_attention", "length_normalize", "mask_tokens", "pick_beams", "repeated_ngram_mask", "row_limits",
    "seeded_uniform", "top_k_filter", "top_p_filter",
]


# ---- token masking and filtering -------------------------------------------------------------------

def forbid_token(log_probs: Tensor, token: int) -> Tensor:
    """A copy of ``log_probs`` (..., V) with ``token`` set to -inf in every row (used for EOS before min_len)."""
    out = log_probs.clone()
    out[..., token] = NEG_INF
    return out


def mask_tokens(log_probs: Tensor, mask: Tensor) -> Tensor:
    """``log_probs`` (..., V) with -inf wherever ``mask`` (bool, broadcastable to it) is True."""
    return log_probs.masked_fill(mask, NEG_INF)


def repeated_ngram_mask(prefix: Tensor, n: int, vocab_size: int) -> Tensor:
    """Which next tokens would repeat an ``n``-gram already in ``prefix``.

    prefix (..., t) long, the tokens generated so far -> (..., V) bool, True at every token ``v``
    such that the last ``n - 1`` tokens followed by ``v`` already occur in ``prefix``. With ``n == 1``
    every token already generated is marked. All False while ``t < n``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t = prefix.size(-1)
    mask = torch.zeros(*prefix.shape[:-1], vocab_size, dtype=torch.long, device=prefix.device)
    if t < n:
        return mask.bool()
    grams = prefix.unfold(-1, n, 1)  # (..., t - n + 1, n) every n-gram so far
    suffix = prefix[..., t - (n - 1):]  # (..., n - 1) what the next token would extend
    seen = (grams[..., :-1] == suffix.unsqueeze(-2)).all(-1)  # (..., t - n + 1) n-grams with that start
    return mask.scatter_add(-1, grams[..., -1], seen.long()) > 0  # scatter_add: repeated indices are safe


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row, set the rest to -inf.

    logits (N, V) -> (N, V). ``k <= 0`` or ``k >= V`` keeps everything. Logits tied with the k-th
    largest are all kept.
    """
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (N, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to at least ``p``.

    logits (N, V) -> (N, V), dropped tokens at -inf. The most likely token is always kept; ``p >= 1``
    keeps everything. A token is kept when the mass of the tokens ranked strictly before it is < p.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (N, V)
    probs = sorted_logits.softmax(dim=-1)  # (N, V)
    mass_before = torch.cat([probs.new_zeros(probs.shape[:-1] + (1,)), probs.cumsum(-1)[..., :-1]], -1)
    drop_sorted = mass_before >= p  # (N, V)
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, NEG_INF)


# ---- scores and bounds -----------------------------------------------------------------------------

def length_normalize(log_prob: Tensor, length: int | Tensor, penalty: float) -> Tensor:
    """Score of a hypothesis: ``log_prob / length ** penalty``; ``penalty == 0`` returns ``log_prob`` as is.

    log_prob (...,) float, length an int or a tensor broadcastable to it (tokens counting the EOS).
    """
    if penalty == 0:
        return log_prob
    if not isinstance(length, Tensor):
        length = torch.tensor(float(length), device=log_prob.device)
    return log_prob / length.to(device=log_prob.device, dtype=log_prob.dtype) ** penalty


def best_reachable_score(log_prob: Tensor, length: int, penalty: float, max_len: Tensor) -> Tensor:
    """Upper bound on the final score of live hypotheses with ``length`` tokens so far.

    log_prob (...,) float (<= 0, -inf for dead hypotheses) -> (...,); ``max_len`` a long tensor
    broadcastable to it (each row's longest allowed length). A log-prob only decreases as tokens are
    added, so with ``penalty > 0`` the best case divides by ``max_len``, with ``penalty == 0`` it is the
    log-prob itself, and with ``penalty < 0`` it is one token (EOS) away. The bound holds for any
    running sum that stays <= 0 and never rises, not only for the model's log-probability.
    """
    if penalty == 0:
        return log_prob
    if penalty > 0:
        return length_normalize(log_prob, max_len, penalty)
    return length_normalize(log_prob, max_len.clamp(max=length + 1), penalty)


# ---- beams -----------------------------------------------------------------------------------------

def pick_beams(x: Tensor, index: Tensor) -> Tensor:
    """x (A, K, ...) and index (A, M) long -> (A, M, ...) with ``out[a, m] = x[a, index[a, m]]``.

    The gather of beam search: follow each kept candidate back to the beam it extends.
    """
    return x[torch.arange(x.size(0), device=x.device)[:, None], index]


def beam_candidates(scores: Tensor, eos: int) -> tuple[Tensor, Tensor]:
    """The choice of one beam of width W: which continuations may finish and which stay live.

    scores (A, W, V): the ranking score of every continuation (beam, next token) of every row ->
    ``first``, ``live`` (A, W) long, indices into the flattened W × V candidates (beam ``i // V``,
    token ``i % V``), best first. ``first`` are the W best candidates: those that are EOS finish.
    ``live`` are the W best non-EOS candidates among the best 2W: they stay live (where fewer than W
    non-EOS candidates rank that high, an EOS one fills the slot and marks it empty). Candidates
    scored -inf are not real: the caller masks them.
    """
    A, W, V = scores.shape
    top = scores.reshape(A, W * V).topk(min(2 * W, W * V), dim=1).indices  # (A, C) best first
    is_eos = top % V == eos  # (A, C)
    live = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :W]  # non-EOS first, in order
    return top[:, :W], top.gather(1, live)


# ---- sampling --------------------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mix32(x: Tensor) -> Tensor:
    """A bijective avalanche hash of 32-bit values held in an int64 tensor (no product exceeds 2**63)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def seeded_uniform(seed: int, stream: Tensor, step: int) -> Tensor:
    """One uniform number in [0, 1) per entry of ``stream``, a pure function of (seed, stream id, step).

    stream (N,) long (e.g. the sample index of each row) -> (N,) float64. A counter-based generator:
    the value for (seed, j, t) is the same on every device and whatever else is drawn in the call, so
    a seeded row's draws cannot depend on the other rows of its batch.
    """
    h = torch.full_like(stream, seed & _MASK32)
    for word in ((seed >> 32) & _MASK32, stream & _MASK32, step & _MASK32):
        h = _mix32(((h ^ word) + _GOLDEN) & _MASK32)
    return h.double() / 2.0**32


def inverse_cdf_sample(probs: Tensor, uniform: Tensor) -> Tensor:
    """Draw one token per row by inverting its cumulative distribution.

    probs (N, V) non-negative (need not sum to one exactly), uniform (N,) in [0, 1) -> (N,) long: the
    first token whose cumulative mass exceeds ``uniform`` × the row's total. Tokens of zero probability
    are never drawn.
    """
    cdf = probs.double().cumsum(-1)  # (N, V)
    target = (uniform.to(cdf) * cdf[:, -1]).unsqueeze(1)  # (N, 1)
    token = torch.searchsorted(cdf, target, right=True).squeeze(1)  # (N,)
    V = probs.size(-1)
    last = V - 1 - (probs > 0).flip(-1).long().argmax(-1)  # (N,) last token with mass (rounding guard)
    return torch.minimum(token, last)


# ---- plumbing --------------------------------------------------------------------------------------

def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def infer_device(decoder: Any, state: Any) -> torch.device:
    """Where the first input tokens go: the device of the first tensor in ``state`` (searched through
    tuples, lists, dicts and dataclasses), else of the decoder's first parameter, else the CPU."""
    found = _first_tensor(state)
    if found is not None:
        return found.device
    parameters = getattr(decoder, "parameters", None)
    if callable(parameters):
        for param in parameters():
            return param.device
    return torch.device("cpu")


def last_attention(decoder: Any) -> Tensor | None:
    """The (N, S) attention of the decoder's last ``step``, if it exposes ``last_attention``; else None."""
    return getattr(decoder, "last_attention", None)


def check_max_len(max_len: int) -> None:
    """Raise a ValueError unless ``max_len`` allows at least one decoding step."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1 (decoding steps, EOS included), got {max_len}")


def row_limits(max_lens: Tensor | None, batch_size: int, max_len: int, device: torch.device) -> Tensor:
    """(B,) long: each row's own step limit (``max_lens``, checked) or ``max_len`` for every row."""
    if max_lens is None:
        return torch.full((batch_size,), max_len, dtype=torch.long, device=device)
    limits = torch.as_tensor(max_lens, dtype=torch.long).to(device)
    if limits.shape != (batch_size,):
        raise ValueError(f"max_lens must have shape ({batch_size},), got {tuple(limits.shape)}")
    if batch_size and (int(limits.min()) < 1 or int(limits.max()) > max_len):
        raise ValueError(f"max_lens must lie within [1, max_len={max_len}], got {limits.tolist()}")
    return limits
