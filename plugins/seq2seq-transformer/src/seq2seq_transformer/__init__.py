"""A Transformer text encoder for seq2seq-lightning (registered as ``transformer``)."""

from seq2seq_transformer.encoder import TransformerEncoder, sinusoidal_positions

__all__ = ["TransformerEncoder", "sinusoidal_positions"]
