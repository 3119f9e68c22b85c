"""The encoder contract: whatever reads the input and hands the decoder its memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from seq2seq_lightning.spec import RecordsInitArgs


@dataclass
class EncoderOutput:
    """What every encoder returns.

    Attributes:
        memory: (B, S, D) one vector per source position (image: per spatial cell, S = h*w).
        mask: (B, S) bool, True at real positions.
        summary: (B, D) one vector per input, used to initialise the decoder.
    """

    memory: Tensor
    mask: Tensor
    summary: Tensor

    def index_select(self, index: Tensor) -> EncoderOutput:
        """Rows ``index`` of every field (beam expansion repeats rows)."""
        return EncoderOutput(self.memory.index_select(0, index), self.mask.index_select(0, index),
                             self.summary.index_select(0, index))


class Encoder(RecordsInitArgs, nn.Module):
    """Base class of all encoders.

    Text encoders take ``__init__(self, vocab_size: int, **hyperparameters)`` and
    ``forward(tokens (B, S) long, lengths (B,) long) -> EncoderOutput``; image encoders take
    ``__init__(self, **hyperparameters)`` and ``forward(images (B, 3, H, W) float) -> EncoderOutput``.
    Subclasses set ``output_size`` (D) and, for image encoders, ``modality = "image"``: a task given
    an encoder of the wrong modality refuses it when it is configured.
    """

    output_size: int
    #: what the encoder reads: ``"text"`` (token ids and lengths) or ``"image"`` (pixels).
    modality: ClassVar[str] = "text"
