"""Encoders: text (rnn) and image (cnn) readers of the input."""

from seq2seq_lightning.encoders.base import Encoder, EncoderOutput

__all__ = ["Encoder", "EncoderOutput"]
