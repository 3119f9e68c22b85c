"""The one place that depends on jsonargparse internals: registry names where a class path goes.

jsonargparse resolves a short class name (``class_path: RNNEncoder``, ``--model.encoder=RNNEncoder``)
in ``jsonargparse._typehints.resolve_class_path_by_name(cls, name)`` and offers no public hook to
extend it. So that registry names (``rnn``, ``beam``, a plugin's name) work wherever a class path
does, :func:`install` wraps that one function, once. It checks the jsonargparse version against
the range pyproject.toml pins and fails loudly outside it; ``tests/test_jsonargparse_names.py``
tests the wrapped behaviour against the installed version.
"""

from __future__ import annotations

from typing import Any

#: the jsonargparse versions this wrapper is written and tested for (as pinned in pyproject.toml)
SUPPORTED = ((4, 40), (5, 0))
_installed = False


def _version() -> tuple[int, int]:
    from importlib.metadata import version

    major, minor = version("jsonargparse").split(".")[:2]
    return int(major), int(minor)


def install() -> None:
    """Make registry names resolve in every jsonargparse parser of this process (idempotent)."""
    global _installed
    if _installed:
        return
    from jsonargparse import _typehints

    low, high = SUPPORTED
    if not low <= _version() < high or not callable(getattr(_typehints, "resolve_class_path_by_name", None)):
        raise ImportError(f"seq2seq-lightning needs jsonargparse >={low[0]}.{low[1]},<{high[0]} (registry names "
                          f"are resolved through its resolve_class_path_by_name); found {_version()}")
    original = _typehints.resolve_class_path_by_name

    def resolve(cls: Any, name: str) -> str:
        from seq2seq_lightning.registry import registry_for, resolve_name

        found = resolve_name(cls, name)
        if found:
            return found
        resolved = original(cls, name)
        if isinstance(name, str) and "." not in name and "." not in resolved:
            registry = registry_for(cls)
            if registry is not None:
                registry.entry(name)  # raises: unknown name, with the known names
        return resolved

    _typehints.resolve_class_path_by_name = resolve
    _installed = True
