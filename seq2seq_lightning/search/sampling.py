"""Ancestral sampling with temperature, top-k and nucleus (top-p) filtering."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder
from seq2seq_lightning.search.functional import (
    check_max_len,
    infer_device,
    inverse_cdf_sample,
    row_limits,
    seeded_uniform,
    top_k_filter,
    top_p_filter,
)
from seq2seq_lightning.search.stepwise import decode_stepwise


class SamplingSearch(SearchStrategy):
    """Draw each next token from the model's distribution, reshaped by temperature, top-k and top-p.

    Per step the model's log-probs are divided by ``temperature``, cut to the ``top_k`` most likely
    tokens, then to the nucleus of ``top_p`` probability mass, and one token is drawn by inverting
    the cumulative distribution at a uniform number. A sample stops at EOS or after its row's step
    limit. Its ``log_prob`` and ``score`` are the sum of the model's own (unfiltered, temperature 1)
    log-probs of the drawn tokens.

    With a ``seed``, the uniform number of sample j at step t is a pure function of (seed, j, t)
    (:func:`~seq2seq_lightning.search.functional.seeded_uniform`), applied to the row's own
    distribution: a row's samples do not depend on the other rows of its batch, its position in it,
    the rows' step limits or the device, and a call never touches torch's global generator. Rows
    share those numbers, not their samples: equal inputs give equal samples.

    Args:
        temperature: divides the log-probs before sampling; below 1 sharpens the distribution,
            above 1 flattens it. Must be > 0.
        top_k: sample only among the k most likely tokens; 0 disables the cut.
        top_p: sample only from the smallest set of most likely tokens whose probability reaches
            top_p (nucleus sampling); 1.0 disables the cut. Must be in (0, 1].
        seed: makes every call reproducible, row by row (see above); None draws from torch's global
            generator.
        num_samples: samples drawn per row, returned best first by score.
        min_len: EOS is forbidden until this many tokens have been generated.
    """

    row_limits = True

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, num_samples: int = 1, min_len: int = 0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if min_len < 0:
            raise ValueError(f"min_len must be >= 0, got {min_len}")
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = float(top_p)
        self.seed = seed
        self.num_samples = num_samples
        self.min_len = min_len

    def sampling_logits(self, log_probs: Tensor) -> Tensor:
        """log_probs (N, V) -> logits (N, V) to sample from: temperature, then top-k, then top-p."""
        logits = log_probs / self.temperature
        logits = top_k_filter(logits, self.top_k)
        return top_p_filter(logits, self.top_p)

    def pick(self, log_probs: Tensor, rows: Tensor, step: int) -> Tensor:
        """log_probs (A, V), rows (A,) search rows (sample ``row % num_samples`` of batch row
        ``row // num_samples``) -> (A,) the drawn tokens."""
        probs = self.sampling_logits(log_probs).softmax(dim=-1)  # (A, V)
        if self.seed is None:
            uniform = torch.rand(rows.numel(), dtype=torch.float64, device=probs.device)
        else:
            uniform = seeded_uniform(self.seed, rows % self.num_samples, step)
        return inverse_cdf_sample(probs, uniform)

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int, max_lens: Tensor | None = None) -> list[list[Hypothesis]]:
        check_max_len(max_len)
        S = self.num_samples
        device = infer_device(decoder, state)
        limits = row_limits(max_lens, batch_size, max_len, device)  # (B,)
        if S > 1:  # search row i is sample i % S of batch row i // S
            state = decoder.reorder_state(state, torch.arange(batch_size, device=device).repeat_interleave(S))
            limits = limits.repeat_interleave(S)  # (B*S,)
        samples = decode_stepwise(decoder, state, self.pick, bos=bos, eos=eos, limits=limits, min_len=self.min_len)
        return [sorted(samples[b * S:(b + 1) * S], key=lambda h: h.score, reverse=True) for b in range(batch_size)]
