"""A Transformer text encoder and decoder for seq2seq-lightning (both registered as ``transformer``)."""

from seq2seq_transformer.decoder import TransformerDecoder, TransformerDecoderState
from seq2seq_transformer.encoder import TransformerEncoder, sinusoidal_positions

__all__ = ["TransformerDecoder", "TransformerDecoderState", "TransformerEncoder", "sinusoidal_positions"]
