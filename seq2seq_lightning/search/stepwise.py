"""The token-by-token loop shared by greedy search and sampling: one token per row and step.

A strategy supplies only how the next token is picked (:class:`PickToken`); the loop feeds the decoder,
forbids EOS before ``min_len``, sums the model's log-probs of the picked tokens, records attention,
stops every row at EOS or at its own step limit, and drops stopped rows from the decoder's
computation with ``reorder_state``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, StepDecoder
from seq2seq_lightning.search.functional import forbid_token, infer_device, last_attention


class PickToken(Protocol):
    def __call__(self, log_probs: Tensor, rows: Tensor, step: int) -> Tensor:
        """log_probs (A, V) of the rows still running (EOS already forbidden before ``min_len``),
        rows (A,) long: which of the N search rows each is, step: tokens generated so far
        -> (A,) long, the next token of each."""
        ...


@torch.no_grad()
def decode_stepwise(decoder: StepDecoder, state: Any, pick: PickToken, *, bos: int, eos: int,
                    limits: Tensor, min_len: int = 0) -> list[Hypothesis]:
    """Decode N rows token by token, where N = ``limits.numel()`` and ``state`` holds those N rows.

    limits (N,) long: each row's step limit (EOS included). Returns one hypothesis per row, in row
    order: its tokens (no EOS), ``log_prob`` = ``score`` = the sum of the model's log-probs of the
    picked tokens (EOS included when it ended with EOS), and its attention when the decoder has one.
    """
    N, T = limits.numel(), int(limits.max()) if limits.numel() else 0
    device = infer_device(decoder, state)
    limits = limits.to(device)
    tokens = torch.full((N,), bos, dtype=torch.long, device=device)  # (A,)
    rows = torch.arange(N, device=device)  # (A,) search row of each decoder row
    out = torch.zeros(N, T, dtype=torch.long, device=device)  # (N, T) generated ids
    log_prob = torch.zeros(N, device=device)  # (N,)
    length = limits.clone()  # (N,) tokens before EOS (the limit for rows closed without EOS)
    ended = torch.zeros(N, dtype=torch.bool, device=device)  # (N,) ended with EOS
    attention: Tensor | None = None  # (N, T, S)
    for t in range(T):
        logp, state = decoder.step(tokens, state)  # (A, V)
        logp = logp.float().to(device)
        if t < min_len:
            logp = forbid_token(logp, eos)
        tokens = pick(logp, rows, t)  # (A,)
        att = last_attention(decoder)  # (A, S) or None
        if att is not None:
            if attention is None:
                attention = logp.new_zeros(N, T, att.size(-1))
            attention[rows, t] = att.float().to(device)
        out[rows, t] = tokens
        log_prob[rows] = log_prob[rows] + logp.gather(1, tokens[:, None]).squeeze(1)
        is_eos = tokens == eos  # (A,)
        stop = is_eos | (limits[rows] == t + 1)  # (A,) ended with EOS or at the row's limit
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
                   attention: Tensor | None) -> list[Hypothesis]:
    """One hypothesis per row from out (N, T), log_prob (N,), length (N,), ended (N,), attention
    (N, T, S) or None."""
    ids, lps, lens, ends = out.tolist(), log_prob.tolist(), length.tolist(), ended.tolist()
    att = None if attention is None else attention.cpu()
    hyps = []
    for i, row in enumerate(ids):
        n = lens[i]
        steps = n + int(ends[i])
        hyps.append(Hypothesis(tokens=row[:n], log_prob=lps[i], score=lps[i],
                               attention=None if att is None else att[i, :steps].clone()))
    return hyps
