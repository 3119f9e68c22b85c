"""Recurrent text encoder (GRU or LSTM) over packed sequences, with a masked path for export."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq_lightning.encoders.base import Encoder, EncoderOutput


class RNNEncoder(Encoder):
    """Embeds source tokens and reads them with a (bidirectional) GRU or LSTM.

    Sequences are packed, so padding never changes a row's result. :meth:`forward_masked` computes
    the same over the padded input without packing, for exporters (ONNX) that cannot trace packed
    sequences.

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

    def forward_masked(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        """:meth:`forward` without packed sequences (equal to it up to float rounding), for export.

        tokens (B, S) long, lengths (B,) long -> memory (B, S, D), mask (B, S), summary (B, D). Unlike
        :meth:`forward`, the memory keeps all S positions (those past a row's length are zero and
        masked), so every shape follows the input's.
        """
        embedded = self.dropout(self.embedding(tokens))  # (B, S, E)
        memory, hidden = self.run_masked(embedded, lengths)  # (B, S, D), (layers * dirs, B, H)
        summary = torch.cat(list(hidden[-self.num_directions :]), dim=-1)  # (B, D)
        steps = torch.arange(tokens.size(1), device=tokens.device)
        mask = steps[None, :] < lengths.to(tokens.device)[:, None]  # (B, S)
        return EncoderOutput(memory=self.dropout(memory), mask=mask, summary=summary)

    def run_masked(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The recurrence over right-padded input, one layer and direction at a time, as packing gives it.

        embedded (B, S, E), lengths (B,) long -> outputs (B, S, D), zero past each row's length (what
        ``pad_packed_sequence`` gives), and the final hidden state (layers * dirs, B, H) of each row's
        last real position, laid out as the ``h_n`` of ``nn.GRU``/``nn.LSTM``. The forward direction runs
        over the padded rows and its final state is read at position ``length - 1``; the backward
        direction runs over each row reversed within its length (so it starts at the row's last real
        token) and its outputs are reversed back. Rows of length 0 count as length 1, as in :meth:`forward`.
        """
        batch, steps_n = embedded.shape[:2]
        lengths = lengths.to(embedded.device).clamp(min=1)
        steps = torch.arange(steps_n, device=embedded.device)
        real = steps[None, :] < lengths[:, None]  # (B, S)
        # position t of the reversed row is position length-1-t of the row; padding stays in place
        flip = torch.where(real, lengths[:, None] - 1 - steps[None, :], steps[None, :])  # (B, S)
        last = (lengths - 1)[:, None, None]  # (B, 1, 1)
        hidden_size = self.rnn.hidden_size
        inputs, finals = embedded, []
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.rnn.dropout > 0:
                inputs = nn.functional.dropout(inputs, self.rnn.dropout, training=True)
            outputs = []
            for direction in range(self.num_directions):
                x = inputs if direction == 0 else _gather_time(inputs, flip)
                out = self._run_direction(x, layer, direction)  # (B, S, H)
                finals.append(out.gather(1, last.expand(batch, 1, hidden_size))[:, 0])  # (B, H)
                outputs.append(out if direction == 0 else _gather_time(out, flip))
            inputs = torch.cat(outputs, dim=-1)  # (B, S, dirs * H)
        return inputs * real[:, :, None].to(inputs.dtype), torch.stack(finals)

    def _run_direction(self, x: Tensor, layer: int, direction: int) -> Tensor:
        """One direction of one layer of ``self.rnn`` from a zero state: x (B, S, I) -> outputs (B, S, H).

        Calls the ATen recurrence ``nn.GRU``/``nn.LSTM`` themselves call, with that direction's weights,
        so exporters see one GRU/LSTM operator with a dynamic time dimension.
        """
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        weights = [getattr(self.rnn, f"{name}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.size(0), self.rnn.hidden_size)  # (1, B, H)
        if self.cell == "lstm":
            return torch.lstm(x, (h0, h0), weights, True, 1, 0.0, False, False, True)[0]
        return torch.gru(x, h0, weights, True, 1, 0.0, False, False, True)[0]


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x (B, S, F), index (B, S) long -> (B, S, F) with row b, step t = x[b, index[b, t]]."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.size(2)))
