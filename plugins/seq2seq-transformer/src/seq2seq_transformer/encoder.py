"""Transformer text encoder: token embeddings + positions -> self-attention layers -> memory."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from seq2seq_lightning.encoders import Encoder, EncoderOutput
from seq2seq_transformer.positions import add_positions, check_sizes, position_table, sinusoidal_positions

__all__ = ["TransformerEncoder", "sinusoidal_positions"]  # sinusoidal_positions: its old home


class TransformerEncoder(Encoder):
    """Embeds source tokens, adds position codes and reads them with pre-norm self-attention layers.

    Padding positions are masked out of every attention (a key padding mask built from
    ``lengths``), zeroed in the memory and left out of the summary, so padding never changes a
    row's result.

    Args:
        vocab_size: source vocabulary size (passed by the module, not the config).
        d_model: width of the embeddings, of every layer and of the output (memory and summary).
        num_heads: attention heads per layer; must divide ``d_model``.
        num_layers: stacked self-attention layers.
        dim_feedforward: hidden units of each layer's position-wise feed-forward network.
        dropout: dropout on the embeddings, attention weights and feed-forward outputs.
        max_positions: longest source (in tokens) the encoder accepts.
        padding_idx: id of the padding token (its embedding stays zero).
        positions: ``sinusoidal`` (fixed sine/cosine codes) or ``learned`` (one trained vector per
            position).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.1,
        max_positions: int = 512,
        padding_idx: int = 0,
        positions: Literal["sinusoidal", "learned"] = "sinusoidal",
    ) -> None:
        super().__init__()
        check_sizes(d_model, num_heads, max_positions, positions)
        self.d_model = d_model
        self.max_positions = max_positions
        self.positions = positions
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[padding_idx].zero_()
        add_positions(self, positions, max_positions, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model),
                                            enable_nested_tensor=False)
        self.output_size = d_model

    def position_codes(self, length: int) -> Tensor:
        """(length, d_model) the codes added at positions ``0 .. length-1``."""
        if length > self.max_positions:
            raise ValueError(f"source of {length} tokens is longer than max_positions={self.max_positions}")
        return position_table(self)[:length]

    def forward(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        """tokens (B, S) long, lengths (B,) long -> memory (B, S, D), mask (B, S), summary (B, D)."""
        S = tokens.size(1)
        steps = torch.arange(S, device=tokens.device)
        mask = steps[None, :] < lengths.to(tokens.device)[:, None]  # (B, S) True at real tokens
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.position_codes(S)  # (B, S, D)
        # Position 0 is real for every non-empty row; keeping it visible for empty rows as well
        # avoids an all-masked softmax (NaN) without changing any other row.
        ignore = ~mask
        ignore[:, 0] = False
        memory = self.layers(self.dropout(x), src_key_padding_mask=ignore)  # (B, S, D)
        memory = memory.masked_fill(~mask[:, :, None], 0.0)
        count = mask.sum(1, keepdim=True).clamp(min=1).to(memory.dtype)  # (B, 1)
        summary = memory.sum(1) / count  # (B, D) mean over real positions (zeros for an empty row)
        return EncoderOutput(memory=memory, mask=mask, summary=summary)
