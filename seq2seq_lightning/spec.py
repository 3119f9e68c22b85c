"""Built objects as plain data: every encoder, decoder and strategy remembers its constructor arguments.

A checkpoint's hyperparameters must load with ``torch.load(..., weights_only=True)``, whatever a
Python caller handed the module (an instance, a ``functools.partial``, a jsonargparse callable). So
the bases of the three registries record the arguments their constructor was called with, and
:func:`to_spec` turns a built object back into ``{"class_path": ..., "init_args": {...}}``, which
jsonargparse builds again (see :mod:`seq2seq_lightning.building`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

_PLAIN = (str, int, float, bool, type(None))


@functools.cache
def _init_signature(cls: type) -> inspect.Signature:
    """The constructor signature of ``cls``, read once per class (objects are built on hot paths:
    ``translate(beam_size=2)`` builds a strategy per call)."""
    return inspect.signature(cls.__init__)


class RecordsInitArgs:
    """Mixin: ``obj.init_args`` is the dict of arguments the constructor was called with.

    Recorded in ``__new__``, so subclasses need do nothing (not even call ``super().__init__``
    with their arguments). Arguments left at their defaults are not recorded: the constructor
    signature stays the single source of defaults.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__new__(cls)
        signature = _init_signature(cls)
        try:
            given = dict(signature.bind(None, *args, **kwargs).arguments)
            given.pop(next(iter(given)))  # self
            for name, param in signature.parameters.items():
                if param.kind is param.VAR_KEYWORD and name in given:
                    given.update(given.pop(name))
        except TypeError:  # a wrong call: __init__ raises the real error
            given = dict(kwargs)
        object.__setattr__(obj, "_init_args", given)
        return obj

    @property
    def init_args(self) -> dict[str, Any]:
        """The constructor's explicitly given arguments, by name."""
        return dict(self.__dict__.get("_init_args", {}))

    def replace(self, **overrides: Any) -> Any:
        """A new object of the same class: the same arguments, with ``overrides`` on top."""
        return type(self)(**{**self.init_args, **overrides})


def import_class(path: str) -> type:
    """The class at a full dotted path (a ValueError naming it when it cannot be imported)."""
    import importlib

    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import {path!r}: {exc}") from None


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def plain(value: Any, where: str) -> Any:
    """``value`` as plain data (numbers, strings, lists, dicts; built objects as specs), or TypeError."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, RecordsInitArgs):
        return to_spec(value)
    raise TypeError(f"{where}: {type(value).__qualname__} is not plain data (numbers, strings, lists, dicts); "
                    "it cannot be stored in a checkpoint")


def to_spec(obj: RecordsInitArgs, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a built object, without the arguments in ``skip`` (those the
    module passes itself, such as ``vocab_size``)."""
    args = {k: v for k, v in obj.init_args.items() if k not in skip}
    path = class_path(type(obj))
    return {"class_path": path, "init_args": plain(args, path)}
