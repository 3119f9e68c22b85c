"""Beam search with length penalty, n-best output and an exact stopping rule."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder, last_attention
from seq2seq_lightning.search.functional import (
    NEG_INF,
    best_reachable_score,
    check_max_len,
    forbid_token,
    infer_device,
    length_normalize,
    row_limits,
)


def _pick(x: Tensor, index: Tensor) -> Tensor:
    """x (A, K, ...) and index (A, M) -> (A, M, ...): row a gets x[a, index[a, m]]."""
    return x[torch.arange(x.size(0), device=x.device)[:, None], index]


class _NBest:
    """The n best finished hypotheses of every batch row, kept as padded tensors.

    score, log_prob (B, n) (-inf score: empty slot), tokens (B, n, T), length (B, n),
    attention (B, n, T, S) or None; best first.
    """

    def __init__(self, batch_size: int, n: int, max_len: int, device: torch.device) -> None:
        self.score = torch.full((batch_size, n), NEG_INF, device=device)
        self.log_prob = torch.zeros(batch_size, n, device=device)
        self.tokens = torch.zeros(batch_size, n, max_len, dtype=torch.long, device=device)
        self.length = torch.zeros(batch_size, n, dtype=torch.long, device=device)
        self.attention: Tensor | None = None

    def add(self, rows: Tensor, score: Tensor, log_prob: Tensor, tokens: Tensor, length: Tensor,
            attention: Tensor | None) -> None:
        """Merge M candidates per active row into the n-best of ``rows`` (A,).

        score, log_prob, length (A, M) (-inf score: not a candidate), tokens (A, M, T),
        attention (A, M, T, S) or None.
        """
        if attention is not None and self.attention is None:
            b, n, t = self.tokens.shape
            self.attention = attention.new_zeros(b, n, t, attention.size(-1))
        all_score = torch.cat([self.score[rows], score], 1)  # (A, n + M)
        top, pick = all_score.topk(self.score.size(1), dim=1)  # (A, n)
        self.score[rows] = top
        self.log_prob[rows] = torch.cat([self.log_prob[rows], log_prob], 1).gather(1, pick)
        self.length[rows] = torch.cat([self.length[rows], length], 1).gather(1, pick)
        self.tokens[rows] = _pick(torch.cat([self.tokens[rows], tokens], 1), pick)
        if attention is not None:
            self.attention[rows] = _pick(torch.cat([self.attention[rows], attention], 1), pick)

    def nth_score(self, rows: Tensor) -> Tensor:
        """(A,) the n-th best finished score of each row, -inf while it has fewer than n."""
        return self.score[rows, -1]

    def to_hypotheses(self, ended_with_eos: Tensor) -> list[list[Hypothesis]]:
        """Best-first lists; ``ended_with_eos`` (B, n) bool tells whether the EOS step has attention."""
        scores, lps, lens = self.score.tolist(), self.log_prob.tolist(), self.length.tolist()
        ids, ends = self.tokens.tolist(), ended_with_eos.tolist()
        att = None if self.attention is None else self.attention.cpu()
        results = []
        for b in range(len(scores)):
            row = []
            for j, s in enumerate(scores[b]):
                if s == NEG_INF:
                    break
                n = lens[b][j]
                steps = n + int(ends[b][j])
                row.append(Hypothesis(tokens=ids[b][j][:n], log_prob=lps[b][j], score=s,
                                      attention=None if att is None else att[b, j, :steps].clone()))
            results.append(row)
        return results


class BeamSearch(SearchStrategy):
    """Keep the ``beam_size`` most likely prefixes of every row and return the n best finished ones.

    ``score = log_prob / L ** length_penalty`` with ``L`` the generated tokens counting the EOS. Each
    step expands all batch rows × beams in one tensor computation; a hypothesis finishes when an EOS
    candidate ranks among the top ``beam_size``, or is closed as it is after ``max_len`` tokens. A row
    stops once it has ``n_best`` finished hypotheses and no live one can still beat the n-th best, so
    a beam wide enough to keep every prefix returns exactly the exhaustive-search n-best. With
    ``beam_size=1`` it gives greedy search's output.

    With ``length_penalty > 0`` that exact rule must assume a live hypothesis may still grow to
    ``max_len`` tokens at no cost, so rows usually run to ``max_len``. ``stopping="early"`` instead
    bounds a live hypothesis by the score it would get if EOS came next at no cost (its log-prob over
    its length plus one), the rule most toolkits use: far fewer steps, and the same output except
    where a long continuation would have overtaken. With ``length_penalty <= 0`` both rules are the
    same.

    Args:
        beam_size: number of live hypotheses kept per row.
        length_penalty: exponent of the length normalization; 0 ranks by raw log-probability,
            larger values favour longer outputs.
        n_best: number of hypotheses returned per row, best first; at most ``beam_size``.
        min_len: EOS is forbidden until this many tokens have been generated.
        stopping: when a row stops: ``"exact"`` (provably no better hypothesis remains) or
            ``"early"`` (none remains if each live one ended at its next step).
    """

    row_limits = True

    def __init__(self, beam_size: int = 4, length_penalty: float = 0.0, n_best: int = 1,
                 min_len: int = 0, stopping: Literal["exact", "early"] = "exact") -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
        if min_len < 0:
            raise ValueError(f"min_len must be >= 0, got {min_len}")
        if stopping not in ("exact", "early"):
            raise ValueError(f"stopping must be 'exact' or 'early', got {stopping!r}")
        self.stopping = stopping
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        self.n_best = n_best
        self.min_len = min_len

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int, max_lens: Tensor | None = None) -> list[list[Hypothesis]]:
        check_max_len(max_len)
        B, K, T, pen = batch_size, self.beam_size, max_len, self.length_penalty
        device = infer_device(decoder, state)
        limit = row_limits(max_lens, B, T, device)  # (B,) steps allowed per row
        if K > 1:  # one decoder row per (batch row, beam)
            state = decoder.reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))
        tokens = torch.full((B * K,), bos, dtype=torch.long, device=device)  # (A*K,)
        active = torch.arange(B, device=device)  # (A,) batch rows still searching
        beam_lp = torch.full((B, K), NEG_INF, device=device)  # (A, K); one real beam at first
        beam_lp[:, 0] = 0.0
        beam_tok = torch.zeros(B, K, T, dtype=torch.long, device=device)  # (A, K, T)
        beam_att: Tensor | None = None  # (A, K, T, S)
        finished = _NBest(B, self.n_best, T, device)
        for t in range(T):
            logp, state = decoder.step(tokens, state)  # (A*K, V)
            A = active.numel()
            logp = logp.float().to(device).view(A, K, -1)  # (A, K, V)
            V = logp.size(-1)
            if t < self.min_len:
                logp = forbid_token(logp, eos)
            att = last_attention(decoder)  # (A*K, S) or None
            if att is not None:
                att = att.float().to(device).view(A, K, -1)  # (A, K, S)
                if beam_att is None:
                    beam_att = att.new_zeros(A, K, T, att.size(-1))
            cand = (beam_lp.unsqueeze(-1) + logp).view(A, K * V)  # (A, K*V)
            top_lp, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (A, C) best first
            origin, tok = top_idx // V, top_idx % V  # (A, C) source beam, next token
            is_eos = tok == eos  # (A, C)

            # EOS candidates ranked among the top K finish, with t + 1 steps (EOS included).
            f_origin = origin[:, :K]  # (A, K)
            f_ok = is_eos[:, :K] & torch.isfinite(top_lp[:, :K])
            if bool(f_ok.any()):  # most steps finish nothing: skip the bookkeeping then
                f_score = length_normalize(top_lp[:, :K], t + 1, pen).masked_fill(~f_ok, NEG_INF)
                f_att = None
                if beam_att is not None:
                    f_att = _pick(beam_att, f_origin).clone()  # (A, K, T, S)
                    f_att[:, :, t] = _pick(att, f_origin)
                finished.add(active, f_score, top_lp[:, :K], _pick(beam_tok, f_origin),
                             torch.full_like(f_origin, t), f_att)

            # The first K non-EOS candidates stay live; an EOS among them only fills a dead slot.
            live = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :K]  # (A, K)
            beam_lp = top_lp.gather(1, live).masked_fill(is_eos.gather(1, live), NEG_INF)  # (A, K)
            l_origin, l_tok = origin.gather(1, live), tok.gather(1, live)  # (A, K)
            beam_tok = _pick(beam_tok, l_origin)
            beam_tok[:, :, t] = l_tok
            if beam_att is not None:
                beam_att = _pick(beam_att, l_origin)
                beam_att[:, :, t] = _pick(att, l_origin)

            # Rows at their step limit close their live hypotheses as they are: no EOS term, L = t + 1.
            row_t = limit[active]  # (A,)
            closing = row_t == t + 1  # (A,)
            if bool(closing.any()):
                c_lp = beam_lp[closing]
                c_score = length_normalize(c_lp, t + 1, pen).masked_fill(~torch.isfinite(c_lp), NEG_INF)
                finished.add(active[closing], c_score, c_lp, beam_tok[closing], torch.full_like(c_lp, t + 1,
                             dtype=torch.long), None if beam_att is None else beam_att[closing])

            # A row is done when no live hypothesis can reach its n-th best finished score.
            horizon = row_t if self.stopping == "exact" else row_t.clamp(max=t + 2)  # longest length allowed
            bound = best_reachable_score(beam_lp, t + 1, pen, horizon[:, None]).amax(dim=1)  # (A,)
            done = closing | (finished.nth_score(active) >= bound)  # (A,)
            keep = (~done).nonzero().squeeze(1)  # (A',)
            if keep.numel() == 0:
                break  # every row is done: no more decoder calls
            if keep.numel() < A:  # freeze done rows by dropping them from the computation
                active, beam_lp, beam_tok = active[keep], beam_lp[keep], beam_tok[keep]
                l_origin, l_tok = l_origin[keep], l_tok[keep]
                if beam_att is not None:
                    beam_att = beam_att[keep]
            if K > 1 or keep.numel() < A:
                state = decoder.reorder_state(state, (keep[:, None] * K + l_origin).view(-1))
            tokens = l_tok.reshape(-1)
        # EOS-terminated hypotheses have fewer tokens than their row's limit, closed ones exactly that many.
        return finished.to_hypotheses(finished.length < limit[:, None])
