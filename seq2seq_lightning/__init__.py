"""seq2seq-lightning: sequence-to-sequence learning on PyTorch Lightning."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["CaptioningModule", "Ensemble", "TranslationModule", "__version__"]


def __getattr__(name: str) -> Any:  # lazy, so `import seq2seq_lightning.registry` stays light
    if name == "TranslationModule":
        from seq2seq_lightning.modules.translation import TranslationModule

        return TranslationModule
    if name == "CaptioningModule":
        from seq2seq_lightning.modules.captioning import CaptioningModule

        return CaptioningModule
    if name == "Ensemble":
        from seq2seq_lightning.export.ensemble import Ensemble

        return Ensemble
    raise AttributeError(f"module 'seq2seq_lightning' has no attribute {name!r}")
