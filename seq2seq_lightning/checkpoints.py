"""Safe checkpoint loading: plain tensors and containers only, never unpickled code."""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """A checkpoint that carries pickled Python objects (which could run code when loaded)."""


def refuse(path: str | os.PathLike, exc: BaseException) -> UnsafeCheckpointError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnsafeCheckpointError(
        f"refusing to load {os.fspath(path)}: it carries pickled Python objects, which could run code when "
        f"loaded; only plain-data checkpoints (tensors, numbers, strings, lists, dicts) are accepted ({first})")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a clear error for unsafe files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {os.fspath(path)}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise refuse(path, exc) from None
