"""Search strategies: greedy, beam and sampling over a step-wise decoder."""

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder

__all__ = ["Hypothesis", "SearchStrategy", "StepDecoder"]
