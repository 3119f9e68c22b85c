"""Building submodules from what a user or a checkpoint hands the module.

On the command line jsonargparse turns YAML into callables and instances. From Python (and in
tests) the same arguments may be given as a registry name (``"beam"``), a class path, or a plain
``{"class_path": ..., "init_args": {...}}`` dict, which keeps the module's hyperparameters plain data.
"""

from __future__ import annotations

import importlib
from typing import Any

from seq2seq_lightning.registry import Registry


def import_class(path: str) -> type:
    module, _, attr = path.rpartition(".")
    if not module:
        raise ValueError(f"{path!r} is neither a registry name nor a full class path")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from exc


def resolve_class(name: str, registry: Registry | None, base: type) -> type:
    """A registry name or a full class path -> a subclass of ``base``."""
    if registry is not None and "." not in name:
        cls = registry.get(name)
    else:
        cls = import_class(name)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{name!r} is not a subclass of {base.__qualname__}")
    return cls


def build(spec: Any, base: type, registry: Registry | None = None, *args: Any, factory: bool = False) -> Any:
    """Instantiate ``spec`` as a ``base``.

    Args:
        spec: an instance of ``base``; a callable returning one (``factory=True``); a registry name
            or class path; or a ``{"class_path", "init_args"}`` dict.
        base: the required base class.
        registry: where short names are looked up.
        *args: positional arguments the module supplies (e.g. ``vocab_size``).
        factory: whether a plain callable ``spec`` should be called with ``*args``.
    """
    if isinstance(spec, base):
        return spec
    if isinstance(spec, str):
        return resolve_class(spec, registry, base)(*args)
    if isinstance(spec, dict):
        if "class_path" not in spec:
            raise ValueError(f"a {base.__qualname__} spec needs a 'class_path' key, got keys {sorted(spec)}")
        cls = resolve_class(spec["class_path"], registry, base)
        return cls(*args, **dict(spec.get("init_args") or {}))
    if factory and callable(spec):
        obj = spec(*args)
        if not isinstance(obj, base):
            raise TypeError(f"{spec!r} built a {type(obj).__qualname__}, not a {base.__qualname__}")
        return obj
    raise TypeError(f"cannot build a {base.__qualname__} from {spec!r}")
