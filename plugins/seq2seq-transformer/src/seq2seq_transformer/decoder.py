"""Transformer decoder: a causal self-attention language model with cross-attention over the memory.

Teacher forcing runs all T positions at once under a causal mask. Search runs one position per
:meth:`TransformerDecoder.step`: each layer caches the keys and values of the positions so far, so
a step projects only the new token, appends its keys and values to the cache and attends over it
with the one new query (O(t) per step, no re-run of the prefix); the cross-attention keys and
values over the memory are computed once, in :meth:`TransformerDecoder.init_state`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq_lightning.decoders import Decoder
from seq2seq_lightning.encoders import EncoderOutput
from seq2seq_transformer.positions import add_positions, check_sizes, position_table


def attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, causal: bool = False,
           dropout: float = 0.0, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention of every head.

    q (N, H, T, d), k and v (N, H, S, d), key_mask (N, S) bool (True: may be attended) or None,
    ``causal``: position i sees keys 0..i (T == S) -> output (N, H, T, d) and, with
    ``need_weights``, the weights averaged over heads (N, T, S).
    """
    if not need_weights and q.size(2) > 1:  # a fused kernel; for a single query (a step) plain products are faster
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (N, 1, 1, S)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal), None
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))  # (N, H, T, S)
    if causal:
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(dim=-1).to(q.dtype)  # (N, H, T, S)
    out = F.dropout(weights, dropout, training=dropout > 0) @ v  # (N, H, T, d)
    return out, weights.mean(dim=1) if need_weights else None


class Attention(nn.Module):
    """Multi-head attention split into projections, so that keys and values can be cached."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def heads(self, x: Tensor) -> Tensor:
        """(N, T, D) -> (N, H, T, D/H)."""
        N, T, D = x.shape
        return x.view(N, T, self.num_heads, D // self.num_heads).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, S, D) -> keys, values (N, H, S, D/H)."""
        k, v = self.key_value(x).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def merge(self, x: Tensor) -> Tensor:
        """(N, H, T, D/H) -> (N, T, D)."""
        N, H, T, d = x.shape
        return x.transpose(1, 2).reshape(N, T, H * d)


class DecoderLayer(nn.Module):
    """Pre-norm layer: causal self-attention, cross-attention over the memory, feed-forward; each
    sublayer reads ``LayerNorm(x)`` and adds its (dropped-out) output to ``x``."""

    def __init__(self, d_model: int, num_heads: int, ff_size: int, dropout: float) -> None:
        super().__init__()
        self.self_norm, self.self_attn = nn.LayerNorm(d_model), Attention(d_model, num_heads)
        self.cross_norm, self.cross_attn = nn.LayerNorm(d_model), Attention(d_model, num_heads)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_size, d_model))
        self.dropout = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: Tensor, memory_kv: Tensor, key_mask: Tensor, has_memory: Tensor,
                cache: Tensor | None = None, position: int = 0, need_weights: bool = False,
                ) -> tuple[Tensor, Tensor | None]:
        """x (N, T, D); memory_kv (2, N, H, S, D/H) cross-attention keys and values; key_mask (N, S);
        has_memory (N,) bool.

        Without ``cache`` the T positions attend causally to each other (teacher forcing). With a
        cache (2, N, H, C, D/H) holding the keys and values of positions ``< position``, the one new
        position (T = 1) writes its own at ``position`` and attends over ``0 .. position``.
        Returns x (N, T, D) and, with ``need_weights``, the cross-attention weights (N, T, S).
        """
        p = self.p if self.training else 0.0
        h = self.self_norm(x)
        q = self.self_attn.heads(self.self_attn.query(h))  # (N, H, T, d)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            cache[0, :, :, position], cache[1, :, :, position] = k[:, :, 0], v[:, :, 0]
            k, v = cache[0, :, :, : position + 1], cache[1, :, :, : position + 1]  # (N, H, t+1, d)
        a, _ = attend(q, k, v, causal=cache is None and x.size(1) > 1, dropout=p)
        x = x + self.dropout(self.self_attn.out(self.self_attn.merge(a)))
        h = self.cross_norm(x)
        q = self.cross_attn.heads(self.cross_attn.query(h))
        a, weights = attend(q, memory_kv[0], memory_kv[1], key_mask=key_mask, dropout=p, need_weights=need_weights)
        a = self.cross_attn.merge(a) * has_memory[:, None, None].to(a.dtype)  # an empty source reads nothing
        x = x + self.dropout(self.cross_attn.out(a))
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        if weights is not None:
            weights = weights * has_memory[:, None, None].to(weights.dtype)
        return x, weights


@dataclass
class TransformerDecoderState:
    """Everything :meth:`TransformerDecoder.step` carries; row i of every tensor is one hypothesis.

    A step appends the new position's keys and values to ``cache`` in place, so it costs no copy of
    the prefix. States are never changed by a step, though: one buffer may back several states (the
    one before a step and the one after), ``written`` (shared by them) says how many positions of it
    hold values, and a step appends in place only when nothing was written after its state's
    ``position``; otherwise (a state stepped twice) or when the buffer is full it copies first.

    Attributes:
        cache: (L, 2, N, H, C, D/H) self-attention keys (``[:, 0]``) and values (``[:, 1]``) of
            every layer; positions ``< position`` hold values, C >= position is the capacity.
        written: one-element list shared by the states on ``cache``: positions of it written so far.
        memory: (L, 2, N, H, S, D/H) cross-attention keys and values over the memory, every layer.
        key_mask: (N, S) bool, the source positions attended (the real ones; all for an empty source).
        has_memory: (N,) bool, whether the source has a real position.
        position: t, the position of the next token.
    """

    cache: Tensor
    written: list[int]
    memory: Tensor
    key_mask: Tensor
    has_memory: Tensor
    position: int

    def index_select(self, index: Tensor) -> TransformerDecoderState:
        """Rows ``index`` (repeated or dropped) of every tensor; the cache is copied into a new buffer."""
        return TransformerDecoderState(self.cache.index_select(2, index), [self.position],
                                       self.memory.index_select(2, index), self.key_mask.index_select(0, index),
                                       self.has_memory.index_select(0, index), self.position)

    def appendable(self, max_positions: int) -> tuple[Tensor, list[int]]:
        """A buffer and its counter where position ``position`` may be written without changing
        any other state: this one when nothing follows ``position`` and there is room, else a copy
        (capacity doubled, at most ``max_positions``)."""
        t, capacity = self.position, self.cache.size(4)
        if self.written[0] == t and t < capacity:
            return self.cache, self.written
        capacity = min(max(2 * capacity, t + 1, 16), max(max_positions, t + 1))
        shape = list(self.cache.shape)
        shape[4] = capacity
        cache = self.cache.new_empty(shape)
        cache[:, :, :, :, :t] = self.cache[:, :, :, :, :t]
        return cache, [t]


class TransformerDecoder(Decoder):
    """Pre-norm Transformer decoder with cached keys and values for search.

    Target embeddings (scaled by ``sqrt(d_model)``) plus position codes feed ``num_layers`` pre-norm
    layers (causal self-attention, cross-attention over the encoder memory under its padding mask,
    feed-forward) and a final layer norm. The memory is projected to ``d_model`` when
    ``memory_size`` differs. The attention returned by :meth:`forward` and kept in
    ``last_attention`` is the last layer's cross-attention, averaged over heads. The defaults match
    this plugin's ``TransformerEncoder``.

    Args:
        vocab_size: target vocabulary size (passed by the module).
        memory_size: the encoder's output size D (passed by the module).
        d_model: width of the embeddings and of every layer.
        num_heads: attention heads per layer; must divide ``d_model``.
        num_layers: stacked decoder layers.
        ff_size: hidden units of each layer's position-wise feed-forward network.
        dropout: dropout on the embeddings, attention weights, feed-forward hidden units and every
            sublayer's output.
        padding_idx: id of the padding token (its embedding starts at zero).
        max_positions: longest target (in tokens, BOS included) the decoder accepts, in training and
            in search.
        tie_embeddings: share one matrix between the target embeddings and the output layer (which
            then has no bias).
        positions: ``sinusoidal`` (fixed sine/cosine codes, as the encoder's default) or ``learned``
            (one trained vector per position).
    """

    def __init__(
        self,
        vocab_size: int,
        memory_size: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        ff_size: int = 256,
        dropout: float = 0.1,
        padding_idx: int = 0,
        max_positions: int = 512,
        tie_embeddings: bool = True,
        positions: Literal["sinusoidal", "learned"] = "sinusoidal",
    ) -> None:
        super().__init__()
        check_sizes(d_model, num_heads, max_positions, positions)
        self.d_model, self.num_heads, self.max_positions = d_model, num_heads, max_positions
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        add_positions(self, positions, max_positions, d_model)
        self.memory_proj = nn.Linear(memory_size, d_model) if memory_size != d_model else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, ff_size, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size, bias=not tie_embeddings)
        for name, p in self.named_parameters():
            if p.dim() > 1 and not name.startswith(("embedding", "position_embedding")):
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[padding_idx].zero_()
        if tie_embeddings:
            self.output.weight = self.embedding.weight
        self.last_attention: Tensor | None = None

    # -- pieces ---------------------------------------------------------------------------------
    def position_codes(self, start: int, length: int) -> Tensor:
        """(length, d_model) the codes of positions ``start .. start+length-1``."""
        if start + length > self.max_positions:
            raise ValueError(f"target position {start + length - 1} is beyond max_positions={self.max_positions}")
        return position_table(self)[start : start + length]

    def embed(self, tokens: Tensor, start: int) -> Tensor:
        """tokens (N, T) long at positions start.. -> (N, T, D)."""
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.position_codes(start, tokens.size(1))
        return self.dropout(x)

    def init_state(self, enc: EncoderOutput) -> TransformerDecoderState:
        """Cross-attention keys/values of every layer over the memory (once), an empty self-attention cache."""
        self.last_attention = None
        memory, key_mask, has_memory = self._memory(enc)
        L, _, B, H, _, d = memory.shape
        cache = memory.new_empty(L, 2, B, H, min(16, self.max_positions), d)
        return TransformerDecoderState(cache, [0], memory, key_mask, has_memory, 0)

    def _memory(self, enc: EncoderOutput) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-attention keys and values (L, 2, B, H, S, D/H), key_mask (B, S), has_memory (B,)."""
        memory = self.memory_proj(enc.memory)  # (B, S, D)
        kv = torch.stack([torch.stack(layer.cross_attn.keys_values(memory)) for layer in self.layers])
        has_memory = enc.mask.any(dim=1)  # (B,)
        key_mask = enc.mask | ~has_memory[:, None]  # (B, S): an empty source attends anywhere, then reads nothing
        return kv, key_mask, has_memory

    def reorder_state(self, state: TransformerDecoderState, index: Tensor) -> TransformerDecoderState:
        """New row i = old row index[i] of every cached tensor."""
        return state.index_select(index)

    # -- the contract ---------------------------------------------------------------------------
    def forward(self, tokens: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: tokens (B, T) long (BOS first) -> logits (B, T, V), attention (B, T, S)."""
        memory, key_mask, has_memory = self._memory(enc)
        x, attention = self.embed(tokens, 0), None
        for i, layer in enumerate(self.layers):
            x, attention = layer(x, memory[i], key_mask, has_memory, need_weights=i == len(self.layers) - 1)
        return self.output(self.norm(x)), attention

    def step(self, tokens: Tensor, state: TransformerDecoderState) -> tuple[Tensor, TransformerDecoderState]:
        """tokens (N,) long -> log-probs (N, V) float32, new state. Sets ``last_attention`` (N, S)."""
        t = state.position
        x, attention = self.embed(tokens[:, None], t), None  # (N, 1, D)
        cache, written = state.appendable(self.max_positions)
        for i, layer in enumerate(self.layers):
            x, attention = layer(x, state.memory[i], state.key_mask, state.has_memory, cache=cache[i], position=t,
                                 need_weights=i == len(self.layers) - 1)
        written[0] = t + 1
        self.last_attention = attention[:, 0].float()
        logp = self.output(self.norm(x[:, 0])).float().log_softmax(dim=-1)  # (N, V)
        return logp, TransformerDecoderState(cache, written, state.memory, state.key_mask, state.has_memory, t + 1)
