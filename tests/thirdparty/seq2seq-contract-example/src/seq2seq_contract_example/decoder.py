"""``contract_gru``: a GRU conditional language model with dot-product attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seq2seq_lightning.decoders import Decoder
from seq2seq_lightning.encoders import EncoderOutput

# The search state: hidden (N, H), memory (N, S, D) with masked positions zeroed, mask (N, S) bool.
State = tuple[Tensor, Tensor, Tensor]


class ContractGRUDecoder(Decoder):
    """A one-layer GRU language model over the target tokens, conditioned on the encoding.

    The initial hidden state is ``tanh(W enc.summary)``; at every position the GRU output attends
    (scaled dot product) over the real positions of ``enc.memory``, and ``tanh(W [output; context])``
    predicts the next token. The attention is not fed back into the GRU, so teacher forcing runs
    the whole sequence at once.

    Args:
        vocab_size: target vocabulary size V (passed by the module).
        memory_size: size D of the encoder's memory and summary vectors (passed by the module).
        embedding_size: size of the target token embeddings.
        hidden_size: size H of the GRU state.
        dropout: dropout on the embeddings and before the output layer (training only).
    """

    def __init__(
        self,
        vocab_size: int,
        memory_size: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if min(vocab_size, memory_size, embedding_size, hidden_size) < 1:
            raise ValueError("vocab_size, memory_size, embedding_size and hidden_size must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.memory_size = memory_size
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.bridge = nn.Linear(memory_size, hidden_size)
        self.gru = nn.GRU(embedding_size, hidden_size, batch_first=True)
        self.query = nn.Linear(hidden_size, memory_size, bias=False)
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.dropout = nn.Dropout(dropout)
        self.last_attention: Tensor | None = None

    def _attend(self, query: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, H), memory (B, S, D) zero where masked, mask (B, S) -> context (B, T, D), weights (B, T, S)."""
        scores = self.query(query) @ memory.transpose(1, 2) / math.sqrt(self.memory_size)  # (B, T, S)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(memory.dtype)  # (B, T, S)
        return weights @ memory, weights

    def _predict(self, outputs: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """GRU outputs (B, T, H) -> logits (B, T, V), attention (B, T, S)."""
        context, weights = self._attend(outputs, memory, mask)
        hidden = torch.tanh(self.combine(torch.cat([outputs, context], dim=-1)))  # (B, T, H)
        return self.output(self.dropout(hidden)), weights

    @staticmethod
    def _memory(enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        mask = enc.mask.bool()  # (B, S)
        memory = enc.memory.masked_fill(~mask[..., None], 0.0)  # (B, S, D): masked values cannot leak
        return memory, mask

    def init_state(self, enc: EncoderOutput) -> State:
        """The search state of the B rows of ``enc``: hidden (B, H), memory (B, S, D), mask (B, S)."""
        memory, mask = self._memory(enc)
        self.last_attention = None
        return torch.tanh(self.bridge(enc.summary)), memory, mask

    def forward(self, tokens: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tokens (B, T) long, BOS first -> logits (B, T, V), attention (B, T, S)."""
        hidden, memory, mask = self.init_state(enc)
        outputs, _ = self.gru(self.dropout(self.embedding(tokens)), hidden[None])  # (B, T, H)
        return self._predict(outputs, memory, mask)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """tokens (N,) long, the last token of each row -> log-probs (N, V) float32, the new state."""
        hidden, memory, mask = state
        outputs, new_hidden = self.gru(self.embedding(tokens)[:, None], hidden[None])  # (N, 1, H)
        logits, weights = self._predict(outputs, memory, mask)  # (N, 1, V), (N, 1, S)
        self.last_attention = weights[:, 0]  # (N, S)
        return torch.log_softmax(logits[:, 0].float(), dim=-1), (new_hidden[0], memory, mask)

    def reorder_state(self, state: State, index: Tensor) -> State:
        """New row i = old row ``index[i]`` (rows may repeat or be dropped)."""
        return tuple(part.index_select(0, index) for part in state)
