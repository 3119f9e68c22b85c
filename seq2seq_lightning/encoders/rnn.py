"""Recurrent text encoder (GRU or LSTM) over packed sequences."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq_lightning.encoders.base import Encoder, EncoderOutput


class RNNEncoder(Encoder):
    """Embeds source tokens and reads them with a (bidirectional) GRU or LSTM.

    Sequences are packed, so padding never changes a row's result.

    Args:
        vocab_size: source vocabulary size (passed by the module, not the config).
        embedding_size: size of the token embeddings.
        hidden_size: hidden units per direction.
        num_layers: stacked recurrent layers.
        cell: recurrent cell, ``gru`` or ``lstm``.
        bidirectional: read the source in both directions; memory and summary then have
            ``2 * hidden_size`` features.
        dropout: dropout on the embeddings, between layers and on the memory.
        padding_idx: id of the padding token (its embedding stays zero).
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: Literal["gru", "lstm"] = "gru",
        bidirectional: bool = True,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        self.cell = cell
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=padding_idx)
        rnn_cls = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(embedding_size, hidden_size, num_layers=num_layers, batch_first=True,
                           bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output_size = hidden_size * self.num_directions

    def forward(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        """tokens (B, S) long, lengths (B,) long -> memory (B, S', D), mask (B, S'), summary (B, D).

        S' = max(lengths) <= S.
        """
        embedded = self.dropout(self.embedding(tokens))  # (B, S, E)
        lengths_cpu = lengths.detach().to("cpu").clamp(min=1)
        packed = pack_padded_sequence(embedded, lengths_cpu, batch_first=True, enforce_sorted=False)
        packed_out, final = self.rnn(packed)
        memory, _ = pad_packed_sequence(packed_out, batch_first=True)  # (B, S', D)
        hidden = final[0] if self.cell == "lstm" else final  # (layers * dirs, B, H)
        last = hidden.view(self.num_layers, self.num_directions, hidden.size(1), hidden.size(2))[-1]
        summary = torch.cat(list(last), dim=-1)  # (B, D)
        steps = torch.arange(memory.size(1), device=tokens.device)
        mask = steps[None, :] < lengths.to(tokens.device)[:, None]  # (B, S')
        return EncoderOutput(memory=self.dropout(memory), mask=mask, summary=summary)
