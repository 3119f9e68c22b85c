"""Ancestral sampling with temperature, top-k and nucleus (top-p) filtering."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder, last_attention
from seq2seq_lightning.search.functional import (
    check_max_len,
    forbid_token,
    infer_device,
    top_k_filter,
    top_p_filter,
)


class SamplingSearch(SearchStrategy):
    """Draw each next token from the model's distribution, reshaped by temperature, top-k and top-p.

    Per step the model's log-probs are divided by ``temperature``, cut to the ``top_k`` most likely
    tokens, then to the nucleus of ``top_p`` probability mass, and one token is drawn. A sample stops
    at EOS or after ``max_len`` tokens. Its ``log_prob`` and ``score`` are the sum of the model's own
    (unfiltered, temperature 1) log-probs of the drawn tokens.

    Args:
        temperature: divides the log-probs before sampling; below 1 sharpens the distribution,
            above 1 flattens it. Must be > 0.
        top_k: sample only among the k most likely tokens; 0 disables the cut.
        top_p: sample only from the smallest set of most likely tokens whose probability reaches
            top_p (nucleus sampling); 1.0 disables the cut. Must be in (0, 1].
        seed: seed of a private random generator, so a call is reproducible; None draws from
            torch's global generator.
        num_samples: samples drawn per row, returned best first by score.
        min_len: EOS is forbidden until this many tokens have been generated.
    """

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

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int) -> list[list[Hypothesis]]:
        check_max_len(max_len)
        N = batch_size * self.num_samples
        device = infer_device(decoder, state)
        if self.num_samples > 1:  # decoder row i is sample i % num_samples of batch row i // num_samples
            state = decoder.reorder_state(state, torch.arange(batch_size, device=device)
                                          .repeat_interleave(self.num_samples))
        tokens = torch.full((N,), bos, dtype=torch.long, device=device)  # (A,)
        rows = torch.arange(N, device=device)  # (A,) sample row of each decoder row
        out = torch.zeros(N, max_len, dtype=torch.long, device=device)  # (N, T)
        log_prob = torch.zeros(N, device=device)  # (N,)
        length = torch.full((N,), max_len, dtype=torch.long, device=device)  # (N,) tokens before EOS
        ended = torch.zeros(N, dtype=torch.bool, device=device)  # (N,)
        attention: Tensor | None = None  # (N, T, S)
        generator: torch.Generator | None = None
        for t in range(max_len):
            logp, state = decoder.step(tokens, state)  # (A, V)
            logp = logp.float().to(device)
            if generator is None and self.seed is not None:
                generator = torch.Generator(device=logp.device).manual_seed(self.seed)
            logits = forbid_token(logp, eos) if t < self.min_len else logp
            probs = self.sampling_logits(logits).softmax(dim=-1)  # (A, V)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (A,)
            att = last_attention(decoder)  # (A, S) or None
            if att is not None:
                if attention is None:
                    attention = logp.new_zeros(N, max_len, att.size(-1))
                attention[rows, t] = att.float().to(device)
            out[rows, t] = tokens
            log_prob[rows] = log_prob[rows] + logp.gather(1, tokens[:, None]).squeeze(1)
            is_eos = tokens == eos  # (A,)
            if not bool(is_eos.any()):
                continue
            length[rows[is_eos]] = t
            ended[rows[is_eos]] = True
            keep = (~is_eos).nonzero().squeeze(1)  # (A',)
            if t + 1 == max_len or keep.numel() == 0:
                break  # every row ended: no more decoder calls
            rows, tokens = rows[keep], tokens[keep]
            state = decoder.reorder_state(state, keep)
        return self._to_hypotheses(batch_size, out, log_prob, length, ended, attention)

    def _to_hypotheses(self, batch_size: int, out: Tensor, log_prob: Tensor, length: Tensor, ended: Tensor,
                       attention: Tensor | None) -> list[list[Hypothesis]]:
        """Group the N = B × num_samples samples by batch row, best score first."""
        ids, lps, lens, ends = out.tolist(), log_prob.tolist(), length.tolist(), ended.tolist()
        att = None if attention is None else attention.cpu()
        results = []
        for b in range(batch_size):
            row = []
            for i in range(b * self.num_samples, (b + 1) * self.num_samples):
                steps = lens[i] + int(ends[i])
                row.append(Hypothesis(tokens=ids[i][:lens[i]], log_prob=lps[i], score=lps[i],
                                      attention=None if att is None else att[i, :steps].clone()))
            row.sort(key=lambda h: h.score, reverse=True)
            results.append(row)
        return results
