"""Small pure functions for the decoding math shared by the search strategies.

Shapes: ``N`` rows (batch, or batch × beam flattened), ``V`` vocabulary size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

NEG_INF = float("-inf")


def forbid_token(log_probs: Tensor, token: int) -> Tensor:
    """A copy of ``log_probs`` (..., V) with ``token`` set to -inf in every row (used for EOS before min_len)."""
    out = log_probs.clone()
    out[..., token] = NEG_INF
    return out


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
    log-prob itself, and with ``penalty < 0`` it is one token (EOS) away.
    """
    if penalty == 0:
        return log_prob
    if penalty > 0:
        return length_normalize(log_prob, max_len, penalty)
    return length_normalize(log_prob, max_len.clamp(max=length + 1), penalty)


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
