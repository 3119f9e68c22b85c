"""Decoders: conditional language models over the encoder's output."""

from seq2seq_lightning.decoders.base import Decoder

__all__ = ["Decoder"]
