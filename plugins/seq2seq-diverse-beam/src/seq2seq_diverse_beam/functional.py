"""Small pure helpers for diverse beam search.

Shapes: ``A`` active batch rows, ``K`` beams per row, ``T`` the step limit, ``V`` the vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

NEG_INF = float("-inf")


def rows_pick(x: Tensor, index: Tensor) -> Tensor:
    """x (A, K, ...) and index (A, M) long -> (A, M, ...) with out[a, m] = x[a, index[a, m]]."""
    return x[torch.arange(x.size(0), device=x.device)[:, None], index]


def length_score(log_prob: Tensor, length: int | Tensor, penalty: float) -> Tensor:
    """``log_prob / length ** penalty``; ``penalty == 0`` ranks by the raw log-probability."""
    if penalty == 0:
        return log_prob
    return log_prob / torch.as_tensor(length, dtype=log_prob.dtype, device=log_prob.device) ** penalty


def score_bound(log_prob: Tensor, length: int, penalty: float, max_len: int) -> Tensor:
    """The best final score live hypotheses with ``length`` tokens and ``log_prob`` (<= 0) can reach.

    Adding tokens never raises a log-probability. With ``penalty > 0`` dividing by the longest
    possible length ``max_len`` is the best case; with ``penalty < 0`` ending right away (one more
    step, the EOS); with ``penalty == 0`` the log-probability itself.
    """
    if penalty > 0:
        return length_score(log_prob, max_len, penalty)
    if penalty < 0:
        return length_score(log_prob, min(length + 1, max_len), penalty)
    return log_prob


def count_tokens(counts: Tensor, tokens: Tensor, valid: Tensor) -> Tensor:
    """Add one to ``counts`` (A, V) at every ``tokens`` (A, M) entry where ``valid`` (A, M) is True."""
    return counts.scatter_add(1, tokens, valid.to(counts.dtype))


def _first_tensor(obj: Any, depth: int = 0) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if depth > 4:
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _first_tensor(item, depth + 1)
            if found is not None:
                return found
    return None


def find_device(decoder: Any, state: Any) -> torch.device:
    """Where the search's own tensors live: the device of the decoder state, else of the decoder's
    parameters, else the CPU."""
    found = _first_tensor(state)
    if found is not None:
        return found.device
    parameters = getattr(decoder, "parameters", None)
    if callable(parameters):
        for param in parameters():
            return param.device
    return torch.device("cpu")
