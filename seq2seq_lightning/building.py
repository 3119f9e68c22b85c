"""One way to build submodules: jsonargparse, from a registry name, class path or spec.

The command line builds encoders, decoders, strategies and optimizers with jsonargparse; Python
callers and checkpoints go through the same parser here, so a registry name, a full class path and
``{"class_path": ..., "init_args": {...}}`` mean the same everywhere. An instance or a callable
(a class, a ``functools.partial``, what jsonargparse makes of a ``Callable[...]`` option) is used
as it is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentParser

from seq2seq_lightning import _jsonargparse_names
from seq2seq_lightning.registry import registry_for

_jsonargparse_names.install()


@functools.cache
def _parser(hint: Any) -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=hint)
    return parser


def parse(spec: str | dict, hint: Any, what: str) -> Any:
    """jsonargparse's value of type ``hint`` for ``spec`` (an instance, or a callable for a
    ``Callable[...]`` hint); an invalid spec is a ValueError naming ``what``."""
    parser = _parser(hint)
    try:
        return parser.instantiate(parser.parse_object({"value": spec})).value
    except Exception as exc:  # noqa: BLE001 - jsonargparse raises several kinds; one clear error
        message = " ".join(str(exc).split())
        raise ValueError(f"{what}: cannot build {spec!r}: {message[:400]}") from None


def build(value: Any, base: type, *args: Any, what: str) -> Any:
    """An instance of ``base`` from ``value``, passing ``*args`` (what the module supplies, such as
    ``vocab_size``) to whatever is not built yet.

    ``value``: an instance of ``base``; a callable returning one; a registry name or class path; a
    ``{"class_path", "init_args"}`` dict.
    """
    if isinstance(value, base):
        return value
    if isinstance(value, (str, dict)):
        target_class(value, base)  # an unknown name (a RegistryError listing the known ones) or path fails here
        hint = Callable[[Any] * len(args), base] if args else base
        value = parse(value, hint, what)
        if isinstance(value, base):
            return value
    if callable(value):
        obj = value(*args)
        if not isinstance(obj, base):
            raise TypeError(f"{what}: {value!r} built a {type(obj).__qualname__}, not a {base.__qualname__}")
        return obj
    raise TypeError(f"{what}: cannot build a {base.__qualname__} from {value!r}")


def target_class(value: Any, base: type) -> type | None:
    """The class ``value`` will build, without building it (None when that cannot be told)."""
    if isinstance(value, base):
        return type(value)
    name = value if isinstance(value, str) else value.get("class_path") if isinstance(value, dict) else None
    if isinstance(name, str):
        registry = registry_for(base)
        if "." not in name and registry is not None:
            return registry.get(name)
        from seq2seq_lightning.spec import import_class

        return import_class(name)
    if isinstance(value, functools.partial):
        return partial_class(value)
    return value if isinstance(value, type) else None


def partial_class(value: functools.partial) -> type | None:
    """The class a ``functools.partial`` builds: its function when that is a class, or the class
    jsonargparse's partials for ``Callable[...]`` options carry as their last positional argument
    (``partial(instantiator, cls, **init_args)``); None otherwise."""
    func = value.args[-1] if value.args and isinstance(value.args[-1], type) else value.func
    return func if isinstance(func, type) else None


def resolve_strategy(configured: Any, strategy: Any = None, **kwargs: Any) -> Any:
    """The strategy to search with, given the ``configured`` one.

    ``None``: the configured strategy, with ``kwargs`` overriding only the arguments they name
    (``beam_size=2`` keeps its ``length_penalty``). A registry name or class path: that class, built
    from its defaults and ``kwargs``. An instance or a spec dict: as it is.
    """
    from seq2seq_lightning.search.base import SearchStrategy

    if strategy is None:
        params = inspect.signature(type(configured).__init__).parameters
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ValueError(f"the configured strategy {type(configured).__name__} takes no {', '.join(unknown)}; "
                             f"name a strategy that does (strategy='beam', say)")
        return configured.replace(**kwargs) if kwargs else configured
    if isinstance(strategy, str):
        return build({"class_path": strategy, "init_args": kwargs}, SearchStrategy, what="strategy")
    if kwargs:
        raise ValueError("strategy keyword arguments go with a strategy name (or none), not an instance")
    return build(strategy, SearchStrategy, what="strategy")
