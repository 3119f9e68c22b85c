"""Position codes and the size checks shared by the Transformer encoder and decoder."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_positions(num_positions: int, d_model: int) -> Tensor:
    """(num_positions, d_model) fixed sine/cosine position codes.

    Even features are ``sin(p / 10000^(2i/d))``, odd ones the matching cosine; an odd ``d_model``
    drops the last cosine.
    """
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (P, 1)
    even = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(D/2),)
    rate = torch.exp(even * (-math.log(10000.0) / d_model))
    table = torch.zeros(num_positions, d_model)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : d_model // 2]
    return table


def check_sizes(d_model: int, num_heads: int, max_positions: int, positions: str) -> None:
    """A ValueError naming the argument when the sizes cannot make a Transformer."""
    if d_model % num_heads != 0:
        raise ValueError(f"num_heads ({num_heads}) must divide d_model ({d_model})")
    if positions not in ("sinusoidal", "learned"):
        raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}")
    if max_positions < 1:
        raise ValueError(f"max_positions must be >= 1, got {max_positions}")


def add_positions(module: nn.Module, positions: str, max_positions: int, d_model: int) -> None:
    """Give ``module`` its position codes: a trained ``position_embedding`` (learned), or the fixed
    ``position_table`` buffer (sinusoidal, not saved) with ``position_embedding = None``."""
    if positions == "learned":
        module.position_embedding = nn.Embedding(max_positions, d_model)
        nn.init.normal_(module.position_embedding.weight, std=0.02)
    else:
        module.position_embedding = None
        module.register_buffer("position_table", sinusoidal_positions(max_positions, d_model), persistent=False)


def position_table(module: nn.Module) -> Tensor:
    """(max_positions, d_model) the codes ``add_positions`` gave ``module``."""
    return module.position_embedding.weight if module.position_embedding is not None else module.position_table
