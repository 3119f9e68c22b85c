"""Greedy search: the most likely next token at every step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder, last_attention
from seq2seq_lightning.search.functional import check_max_len, forbid_token, infer_device, row_limits


class GreedySearch(SearchStrategy):
    """Pick the arg-max token at every step; a row stops at EOS or after ``max_len`` tokens.

    The whole batch runs through one ``decoder.step`` per time step; rows that reached EOS are dropped
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

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int, max_lens: Tensor | None = None) -> list[list[Hypothesis]]:
        check_max_len(max_len)
        device = infer_device(decoder, state)
        limit = row_limits(max_lens, batch_size, max_len, device)  # (B,) steps allowed per row
        tokens = torch.full((batch_size,), bos, dtype=torch.long, device=device)  # (A,)
        rows = torch.arange(batch_size, device=device)  # (A,) batch row of each decoder row
        out = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)  # (B, T) generated ids
        log_prob = torch.zeros(batch_size, device=device)  # (B,)
        length = limit.clone()  # (B,) tokens before EOS (the limit for rows closed without EOS)
        ended = torch.zeros(batch_size, dtype=torch.bool, device=device)  # (B,) ended with EOS
        attention: Tensor | None = None  # (B, T, S)
        for t in range(max_len):
            logp, state = decoder.step(tokens, state)  # (A, V)
            logp = logp.float().to(device)
            if t < self.min_len:
                logp = forbid_token(logp, eos)
            best, tokens = logp.max(dim=-1)  # (A,), (A,)
            att = last_attention(decoder)  # (A, S) or None
            if att is not None:
                if attention is None:
                    attention = logp.new_zeros(batch_size, max_len, att.size(-1))
                attention[rows, t] = att.float().to(device)
            out[rows, t] = tokens
            log_prob[rows] = log_prob[rows] + best
            is_eos = tokens == eos  # (A,)
            stop = is_eos | (limit[rows] == t + 1)  # (A,) ended with EOS or at the row's limit
            if not bool(stop.any()):
                continue
            length[rows[is_eos]] = t
            ended[rows[is_eos]] = True
            keep = (~stop).nonzero().squeeze(1)  # (A',)
            if keep.numel() == 0:
                break  # every row ended: no more decoder calls
            rows, tokens = rows[keep], tokens[keep]
            state = decoder.reorder_state(state, keep)
        return _to_hypotheses(out, log_prob, length, ended, attention)


def _to_hypotheses(out: Tensor, log_prob: Tensor, length: Tensor, ended: Tensor,
                   attention: Tensor | None) -> list[list[Hypothesis]]:
    """One single-hypothesis list per row from out (B, T), log_prob (B,), length (B,), ended (B,),
    attention (B, T, S) or None."""
    ids, lps, lens, ends = out.tolist(), log_prob.tolist(), length.tolist(), ended.tolist()
    att = None if attention is None else attention.cpu()
    results = []
    for b, row in enumerate(ids):
        n = lens[b]
        steps = n + int(ends[b])
        results.append([Hypothesis(tokens=row[:n], log_prob=lps[b], score=lps[b],
                                   attention=None if att is None else att[b, :steps].clone())])
    return results
