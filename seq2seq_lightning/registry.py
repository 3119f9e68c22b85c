"""Registries of encoders, decoders and search strategies, filled from Python entry points.

Built-ins and third-party plugins take one path: each is an entry point in the group
``seq2seq_lightning.encoders``, ``seq2seq_lightning.decoders`` or ``seq2seq_lightning.strategies``; the entry point's name is the
registry name. Entry points are read on first use of a registry, not at import time.

A plugin whose import fails, or whose object is not a subclass of the group's base class, is
recorded in :attr:`Registry.failures` (distribution, entry point, error) and skipped; the rest keep
working. Two distributions claiming one name make that name an error that names both.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)

#: Set to 1 to load only this package's own entry points (and those named in ALLOW_ENV).
DISABLE_ENV = "SEQ2SEQ_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated distribution or entry-point names still loaded when autoload is disabled.
ALLOW_ENV = "SEQ2SEQ_PLUGINS"
OWN_DIST = "seq2seq-lightning"


class RegistryError(KeyError):
    """An unknown or ambiguous registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One registered class and where it came from."""

    name: str
    cls: type
    dist: str
    version: str
    value: str  # "module:attr" as declared by the entry point

    @property
    def class_path(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


@dataclass(frozen=True)
class Failure:
    """A plugin that could not be registered."""

    group: str
    name: str
    dist: str
    value: str
    error: str


def _normalize(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-").replace(".", "-")


def _allowed(dist: str, name: str) -> bool:
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}:
        return True
    if _normalize(dist) == OWN_DIST:
        return True
    allow = {_normalize(x.strip()) for x in os.environ.get(ALLOW_ENV, "").split(",") if x.strip()}
    return _normalize(dist) in allow or _normalize(name) in allow


def _entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=group)


class Registry:
    """Name -> class for one entry-point group.

    Args:
        group: the entry-point group, e.g. ``seq2seq_lightning.strategies``.
        base: ``"module:Class"`` of the base class every entry must subclass (imported lazily).
        kind: a human word for error messages ("encoder", "strategy").
    """

    def __init__(self, group: str, base: str, kind: str) -> None:
        self.group = group
        self.kind = kind
        self._base_path = base
        self._entries: dict[str, Entry] | None = None
        self._conflicts: dict[str, list[str]] = {}
        self.failures: list[Failure] = []

    # -- loading -----------------------------------------------------------------------------
    @property
    def base(self) -> type:
        module, attr = self._base_path.split(":")
        return getattr(importlib.import_module(module), attr)

    def reload(self) -> None:
        """Forget what was loaded; the next access reads the entry points again."""
        self._entries = None
        self._conflicts = {}
        self.failures = []

    def _load(self) -> dict[str, Entry]:
        if self._entries is not None:
            return self._entries
        base = self.base
        entries: dict[str, Entry] = {}
        claims: dict[str, list[str]] = {}
        seen: set[tuple[str, str, str]] = set()
        for ep in _entry_points(self.group):
            dist = ep.dist.name if getattr(ep, "dist", None) is not None else "<unknown>"
            version = ep.dist.version if getattr(ep, "dist", None) is not None else "?"
            key = (_normalize(dist), ep.name, ep.value)
            if key in seen:  # one distribution visible twice on sys.path
                continue
            seen.add(key)
            if not _allowed(dist, ep.name):
                continue
            claims.setdefault(ep.name, []).append(dist)
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any plugin error is reported, not raised
                self._fail(ep, dist, f"import failed: {type(exc).__name__}: {exc}")
                continue
            if not (isinstance(obj, type) and issubclass(obj, base)):
                self._fail(ep, dist, f"{ep.value} is not a subclass of {base.__module__}.{base.__qualname__}")
                continue
            entries.setdefault(ep.name, Entry(ep.name, obj, dist, version, ep.value))
        for name, dists in claims.items():
            if len(set(map(_normalize, dists))) > 1:
                self._conflicts[name] = sorted(set(dists))
                entries.pop(name, None)
                self.failures.append(
                    Failure(self.group, name, " and ".join(sorted(set(dists))), "",
                            f"name {name!r} is claimed by two distributions: {', '.join(sorted(set(dists)))}")
                )
        self._entries = dict(sorted(entries.items()))
        return self._entries

    def _fail(self, ep: metadata.EntryPoint, dist: str, error: str) -> None:
        failure = Failure(self.group, ep.name, dist, ep.value, error)
        self.failures.append(failure)
        log.warning("Skipping %s plugin %r from %s (%s): %s", self.kind, ep.name, dist, ep.value, error)

    # -- public API --------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered names, sorted."""
        return list(self._load())

    def entries(self) -> list[Entry]:
        return list(self._load().values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._load()

    def entry(self, name: str) -> Entry:
        entries = self._load()
        if name in entries:
            return entries[name]
        if name in self._conflicts:
            raise RegistryError(
                f"{self.kind} name {name!r} is claimed by two distributions: "
                f"{' and '.join(self._conflicts[name])}; uninstall one of them or use a full class path"
            )
        raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind} names: {', '.join(entries) or '(none)'}")

    def get(self, name: str) -> type:
        """The class registered under ``name``."""
        return self.entry(name).cls

    def build(self, name: str, **kwargs: Any) -> Any:
        """An instance of the class registered under ``name``."""
        return self.get(name)(**kwargs)

    def class_path(self, name: str) -> str:
        return self.entry(name).class_path

    def __repr__(self) -> str:
        return f"Registry({self.group!r})"


ENCODERS = Registry("seq2seq_lightning.encoders", "seq2seq_lightning.encoders.base:Encoder", "encoder")
DECODERS = Registry("seq2seq_lightning.decoders", "seq2seq_lightning.decoders.base:Decoder", "decoder")
STRATEGIES = Registry("seq2seq_lightning.strategies", "seq2seq_lightning.search.base:SearchStrategy", "strategy")
REGISTRIES = (ENCODERS, DECODERS, STRATEGIES)


def registry_for(base: Any) -> Registry | None:
    """The registry whose base class a type hint (a class or a tuple of classes) is, or None."""
    bases = base if isinstance(base, tuple) else (base,)
    for registry in REGISTRIES:
        try:
            reg_base = registry.base
        except ImportError:
            continue
        if any(isinstance(b, type) and issubclass(b, reg_base) for b in bases):
            return registry
    return None


def resolve_name(base: Any, name: str) -> str | None:
    """The class path registered as ``name`` for a type hint ``base``, or None.

    ``base`` may be a class or a tuple of classes (jsonargparse passes both).
    """
    if not isinstance(name, str) or "." in name:
        return None
    registry = registry_for(base)
    if registry is not None and name in registry:
        return registry.class_path(name)
    return None
