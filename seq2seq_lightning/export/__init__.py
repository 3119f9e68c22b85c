"""Shipping models: checkpoint averaging, ensembles, ONNX export. Submodules are imported on use, so that
importing this package pulls in no optional dependency."""

from typing import Any

__all__ = ["OnnxTranslator", "export_onnx"]


def __getattr__(name: str) -> Any:  # lazy: onnx and onnxruntime are needed only once these are used
    if name == "OnnxTranslator":
        from seq2seq_lightning.export.translator import OnnxTranslator

        return OnnxTranslator
    if name == "export_onnx":
        from seq2seq_lightning.export.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'seq2seq_lightning.export' has no attribute {name!r}")
