"""The search contract: strategies that turn a step-wise conditional LM into output sequences."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from seq2seq_lightning.search.functional import last_attention  # noqa: F401  (re-exported: its old home)
from seq2seq_lightning.spec import RecordsInitArgs


@dataclass
class Hypothesis:
    """One output sequence.

    Attributes:
        tokens: generated ids, no BOS, no EOS.
        log_prob: sum of log P of the generated tokens, EOS included when it ended with EOS.
        score: what the strategy ranked by.
        attention: (steps, S) attention over the source per generated step (EOS step included),
            when the decoder exposes attention.
    """

    tokens: list[int]
    log_prob: float
    score: float
    attention: Tensor | None = None


@runtime_checkable
class StepDecoder(Protocol):
    """A conditional language model that can be run one token at a time.

    A decoder may also expose ``last_attention``: (N, S) float, the attention weights of the most
    recent ``step`` call, or None. Strategies copy it into :attr:`Hypothesis.attention`.
    """

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N,) long, the last token of each row -> log-probs (N, V) float32, new state."""
        ...

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        """New row i = old row index[i]; rows may repeat (beam expansion) or be dropped."""
        ...


class SearchStrategy(RecordsInitArgs, ABC):
    """Base class of all search strategies.

    A strategy that sets ``row_limits = True`` also takes ``max_lens`` in :meth:`search`: a (B,) long
    tensor of per-row step limits (each at most ``max_len``), so rows with different limits are
    searched in one batch. Without it (the default), callers search rows that share a limit together.
    """

    row_limits: bool = False

    @abstractmethod
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int) -> list[list[Hypothesis]]:
        """One best-first list of hypotheses per batch row; ``len(result) == batch_size``.

        ``max_len`` counts decoding steps, EOS included: a hypothesis either ends with EOS within
        ``max_len`` steps or is closed as it is after ``max_len`` tokens (no EOS term then).
        """
