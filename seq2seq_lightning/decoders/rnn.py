"""Recurrent decoder: a language model conditioned on the encoder's output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seq2seq_lightning.decoders.base import Decoder
from seq2seq_lightning.encoders.base import EncoderOutput


@dataclass
class RNNDecoderState:
    """Everything the decoder carries between steps.

    Row i of ``hidden``, ``cell`` and ``feed`` belongs to one hypothesis. The source tensors
    (``memory``, ``keys``, ``mask``) have one row per ``group`` hypotheses: hypothesis row i reads
    source row ``i // group``. A beam of K keeps ``group == K``, so reordering the hypotheses of a
    source moves no source tensor (they are copied only when a source finishes and is dropped).

    Attributes:
        hidden: (L, N, H) recurrent hidden state.
        cell: (L, N, H) LSTM cell state, or None for a GRU.
        memory: (N / group, S, D) encoder memory.
        keys: (N / group, S, A) memory projected for additive attention, or None without attention.
        mask: (N / group, S) bool, True at real source positions.
        feed: (N, H) the previous attentional output (input feeding), or None.
        group: hypothesis rows per source row (contiguous), 1 when every row has its own.
    """

    hidden: Tensor
    cell: Tensor | None
    memory: Tensor
    keys: Tensor | None
    mask: Tensor
    feed: Tensor | None
    group: int = 1

    def index_select(self, index: Tensor) -> RNNDecoderState:
        """New row i = old row ``index[i]``, each with its own copy of its source row (group 1)."""
        return self._select(index, self._source(index), 1)

    def reorder(self, index: Tensor) -> RNNDecoderState:
        """New row i = old row ``index[i]``, sharing source rows where the new rows allow it.

        When the new rows come in runs of equal length ``g`` (the current group, or the rows per
        source of an even expansion) and each run reads one source row, the result has group ``g``
        and the source tensors are kept as they are, or cut to the runs' rows when a source was
        dropped. Any other order falls back to :meth:`index_select`.
        """
        source = self._source(index)  # (N',) the source row each new row reads
        sources = self.memory.size(0)
        for g in sorted({self.group, index.numel() // max(sources, 1)}, reverse=True):  # the longest runs first
            if g < 1 or index.numel() % g:
                continue
            runs = source.view(-1, g)
            if bool((runs == runs[:, :1]).all()):
                return self._select(index, runs[:, 0], g)
        return self.index_select(index)

    def _source(self, index: Tensor) -> Tensor:
        return index // self.group if self.group > 1 else index

    def _select(self, index: Tensor, source: Tensor, group: int) -> RNNDecoderState:
        """Hypothesis rows ``index``; source rows ``source`` (left as they are when that is every row in order)."""
        def rows(t: Tensor | None, which: Tensor, dim: int = 0) -> Tensor | None:
            return None if t is None else t.index_select(dim, which)

        memory, keys, mask = self.memory, self.keys, self.mask
        unchanged = source.numel() == memory.size(0) and bool(
            (source == torch.arange(source.numel(), device=source.device)).all())
        if not unchanged:
            memory, keys, mask = rows(memory, source), rows(keys, source), rows(mask, source)
        return RNNDecoderState(rows(self.hidden, index, 1), rows(self.cell, index, 1), memory, keys, mask,
                               rows(self.feed, index), group)


class AdditiveAttention(nn.Module):
    """Bahdanau-style scores ``v . tanh(W q + U m)`` over the masked memory."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)
        self.key_proj = nn.Linear(memory_size, attention_size)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """memory (B, S, D) -> keys (B, S, A), computed once per source."""
        return self.key_proj(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, Q), keys (B, S, A), memory (B, S, D), mask (B, S) -> context (B, T, D), weights (B, T, S)."""
        q = self.query_proj(query)  # (B, T, A)
        scores = self.energy(torch.tanh(q[:, :, None, :] + keys[:, None, :, :])).squeeze(-1)  # (B, T, S)
        scores = scores.float().masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1).to(memory.dtype)  # (B, T, S)
        return torch.bmm(weights, memory), weights


class RNNDecoder(Decoder):
    """GRU/LSTM conditional language model with optional additive attention.

    The encoder's summary initialises every layer's hidden state through a ``tanh`` bridge. With
    attention, each output position attends over the memory with its own hidden state as query, and
    the prediction reads ``tanh(W [h; context])``; with ``input_feeding`` that attentional vector is
    also fed into the next step's input (slower to train: the recurrence then runs step by step).

    Args:
        vocab_size: target vocabulary size (passed by the module).
        memory_size: the encoder's output size D (passed by the module).
        embedding_size: size of the target token embeddings.
        hidden_size: hidden units of each recurrent layer.
        num_layers: stacked recurrent layers.
        cell: recurrent cell, ``gru`` or ``lstm``.
        attention: attend over the encoder memory (additive attention); without it the source
            reaches the decoder only through the initial state.
        attention_size: size of the additive attention's hidden layer (default: hidden_size).
        input_feeding: feed the previous attentional vector into the next step's input.
        dropout: dropout on embeddings, between layers and before the output layer.
        padding_idx: id of the padding token.
    """

    def __init__(
        self,
        vocab_size: int,
        memory_size: int,
        embedding_size: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: Literal["gru", "lstm"] = "gru",
        attention: bool = True,
        attention_size: int | None = None,
        input_feeding: bool = False,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        if input_feeding and not attention:
            raise ValueError("input_feeding needs attention=True")
        self.cell, self.num_layers, self.hidden_size = cell, num_layers, hidden_size
        self.input_feeding = input_feeding
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=padding_idx)
        self.bridge = nn.Linear(memory_size, num_layers * hidden_size)
        rnn_cls = nn.GRU if cell == "gru" else nn.LSTM
        rnn_input = embedding_size + (hidden_size if input_feeding else 0)
        self.rnn = rnn_cls(rnn_input, hidden_size, num_layers=num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0)
        self.attention = AdditiveAttention(hidden_size, memory_size, attention_size or hidden_size) if attention else None
        self.combine = nn.Linear(hidden_size + (memory_size if attention else 0), hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.last_attention: Tensor | None = None

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, enc: EncoderOutput) -> RNNDecoderState:
        batch = enc.summary.size(0)
        hidden = torch.tanh(self.bridge(enc.summary))  # (B, L * H)
        hidden = hidden.view(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()  # (L, B, H)
        cell = torch.zeros_like(hidden) if self.cell == "lstm" else None
        keys = self.attention.keys(enc.memory) if self.attention is not None else None
        feed = enc.summary.new_zeros(batch, self.hidden_size) if self.input_feeding else None
        return RNNDecoderState(hidden, cell, enc.memory, keys, enc.mask, feed)

    def reorder_state(self, state: RNNDecoderState, index: Tensor) -> RNNDecoderState:
        """New row i = old row index[i] (source tensors shared by a source's rows: :meth:`RNNDecoderState.reorder`)."""
        return state.reorder(index)

    # -- computation ---------------------------------------------------------------------------
    def _run(self, embedded: Tensor, state: RNNDecoderState) -> tuple[Tensor, Tensor | None, RNNDecoderState]:
        """embedded (B, T, E) -> pre-output (B, T, H), attention (B, T, S) or None, new state."""
        hx = (state.hidden, state.cell) if self.cell == "lstm" else state.hidden
        if not self.input_feeding:
            outputs, hx = self.rnn(embedded, hx)  # (B, T, H)
            attn = None
            if self.attention is not None:
                context, attn = self._attend(outputs, state)
                outputs = torch.cat([outputs, context], dim=-1)
            pre = torch.tanh(self.combine(outputs))  # (B, T, H)
            feed = None
        else:
            feed, pres, attns = state.feed, [], []
            for t in range(embedded.size(1)):
                out, hx = self.rnn(torch.cat([embedded[:, t : t + 1], feed[:, None]], dim=-1), hx)  # (B, 1, H)
                context, a = self._attend(out, state)
                pre_t = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))  # (B, 1, H)
                feed = pre_t[:, 0]
                pres.append(pre_t)
                attns.append(a)
            pre, attn = torch.cat(pres, dim=1), torch.cat(attns, dim=1)
        hidden, cell = hx if self.cell == "lstm" else (hx, None)
        return pre, attn, RNNDecoderState(hidden, cell, state.memory, state.keys, state.mask, feed, state.group)

    def _attend(self, query: Tensor, state: RNNDecoderState) -> tuple[Tensor, Tensor]:
        """query (N, T, H) -> context (N, T, D), weights (N, T, S); a source's ``group`` rows attend together."""
        if state.group == 1:
            return self.attention(query, state.keys, state.memory, state.mask)
        n, t, _ = query.shape
        context, weights = self.attention(query.reshape(n // state.group, state.group * t, -1), state.keys,
                                          state.memory, state.mask)
        return context.reshape(n, t, -1), weights.reshape(n, t, -1)

    def forward(self, tokens: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: tokens (B, T) long (BOS first) -> logits (B, T, V), attention (B, T, S) or None."""
        state = self.init_state(enc)
        pre, attn, _ = self._run(self.dropout(self.embedding(tokens)), state)
        return self.output(self.dropout(pre)), attn

    def step(self, tokens: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState]:
        """tokens (N,) long -> log-probs (N, V) float32, new state. Sets ``last_attention`` (N, S)."""
        pre, attn, state = self._run(self.embedding(tokens)[:, None, :], state)
        self.last_attention = None if attn is None else attn[:, 0].float()
        logits = self.output(pre[:, 0])  # (N, V)
        return logits.float().log_softmax(dim=-1), state
