"""The decoder contract: a language model conditioned on the encoder's output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from seq2seq_lightning.encoders.base import EncoderOutput
from seq2seq_lightning.spec import RecordsInitArgs


class Decoder(RecordsInitArgs, nn.Module, ABC):
    """Base class of all decoders (registry group ``seq2seq_lightning.decoders``).

    ``__init__(self, vocab_size: int, memory_size: int, **hyperparameters)``: the module passes
    ``vocab_size`` (target vocabulary) and ``memory_size`` (the encoder's ``output_size``), the
    config the rest. Subclasses call ``super().__init__()`` with no arguments.

    Contract: running :meth:`step` from :meth:`init_state` over the same tokens gives
    ``log_softmax`` of :meth:`forward`'s logits; :meth:`reorder_state` picks, repeats or drops rows;
    a row never depends on the other rows; masked memory positions have no effect.
    ``seq2seq_lightning.testing.check_decoder`` checks all of it.
    """

    #: (N, S) attention weights of the latest :meth:`step`, or None.
    last_attention: Tensor | None = None

    @abstractmethod
    def init_state(self, enc: EncoderOutput) -> Any:
        """The search state of the B rows of ``enc``, for :meth:`step`."""

    @abstractmethod
    def forward(self, tokens: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: tokens (B, T) long, BOS first -> logits (B, T, V), attention (B, T, S) or None."""

    @abstractmethod
    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N,) long, the last token of each row -> log-probs (N, V) float32, new state."""

    @abstractmethod
    def reorder_state(self, state: Any, index: Tensor) -> Any:
        """New row i = old row ``index[i]``; rows may repeat (beam expansion) or be dropped."""
