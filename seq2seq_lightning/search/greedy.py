"""Greedy search: the most likely next token at every step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder
from seq2seq_lightning.search.functional import check_max_len, infer_device, row_limits
from seq2seq_lightning.search.stepwise import decode_stepwise


class GreedySearch(SearchStrategy):
    """Pick the arg-max token at every step; a row stops at EOS or after its step limit.

    The whole batch runs through one ``decoder.step`` per time step; rows that ended are dropped
    from the decoder's computation with ``reorder_state``. Each row gets one hypothesis, scored by its
    log-probability.

    Args:
        min_len: EOS is forbidden until this many tokens have been generated.
    """

    row_limits = True

    def __init__(self, min_len: int = 0) -> None:
        if min_len < 0:
            raise ValueError(f"min_len must be >= 0, got {min_len}")
        self.min_len = min_len

    @staticmethod
    def pick(log_probs: Tensor, rows: Tensor, step: int) -> Tensor:
        """log_probs (A, V) -> (A,) the most likely token of each row."""
        return log_probs.max(dim=-1).indices

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int, max_lens: Tensor | None = None) -> list[list[Hypothesis]]:
        check_max_len(max_len)
        limits = row_limits(max_lens, batch_size, max_len, infer_device(decoder, state))  # (B,)
        hyps = decode_stepwise(decoder, state, self.pick, bos=bos, eos=eos, limits=limits, min_len=self.min_len)
        return [[h] for h in hyps]
