"""``no_repeat_beam``: beam search that never generates the same n-gram twice."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from seq2seq_lightning.search import mask_tokens, repeated_ngram_mask
from seq2seq_lightning.search.beam import BeamSearch


class NoRepeatBeamSearch(BeamSearch):
    """The built-in beam search with every candidate that would repeat an n-gram forbidden (-inf).

    Only the ranking changes: ``Hypothesis.log_prob`` stays the model's log-probability of the
    returned tokens. EOS never forms an n-gram (it is not part of the generated prefix), so a
    hypothesis can always end.

    Args:
        ngram_size: length n of the n-grams that may occur at most once in an output (2: bigrams;
            1: no token twice).
        **beam_args: the built-in ``beam`` strategy's arguments (``beam_size``, ``length_penalty``,
            ``n_best``, ...), with its defaults.
    """

    def __init__(self, ngram_size: int = 2, **beam_args: Any) -> None:
        if ngram_size < 1:
            raise ValueError(f"ngram_size must be at least 1, got {ngram_size}")
        super().__init__(**beam_args)
        self.ngram_size = ngram_size

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        """log_probs (A, K, V), prefix (A, K, step) long -> (A, K, V), -inf where an n-gram would repeat."""
        repeats = repeated_ngram_mask(prefix, self.ngram_size, log_probs.size(-1))  # (A, K, V) bool
        return mask_tokens(log_probs, repeats)
