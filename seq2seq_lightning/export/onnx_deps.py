"""The optional dependencies of ONNX export and inference, imported on use with a clear error."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install 'seq2seq-lightning[export]'"


def require(name: str, purpose: str) -> ModuleType:
    """Import ``name`` (``onnx``, ``onnxruntime``, ``onnxscript``) or raise an ImportError naming the extra.

    Args:
        name: the module to import.
        purpose: what needs it, for the message ("ONNX export", "OnnxTranslator").
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the {name!r} package, which is not installed: {INSTALL_HINT} "
                          f"(the 'export' extra: onnx, onnxruntime, onnxscript)") from exc
