"""Beam search with length penalty, n-best output, an exact stopping rule and a ranking hook."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder
from seq2seq_lightning.search.functional import (
    NEG_INF,
    beam_candidates,
    best_reachable_score,
    check_max_len,
    forbid_token,
    infer_device,
    last_attention,
    length_normalize,
    pick_beams,
    row_limits,
)
from seq2seq_lightning.search.pool import NBestPool


class BeamSearch(SearchStrategy):
    """Keep the ``beam_size`` best prefixes of every row and return the n best finished ones.

    ``score = log_prob / L ** length_penalty`` with ``L`` the generated tokens counting the EOS. Each
    step expands all batch rows × beams in one tensor computation; a hypothesis finishes when an EOS
    candidate ranks among the top ``beam_size``, or is closed as it is after its row's step limit. A
    row stops once it has ``n_best`` finished hypotheses and no live one can still beat the n-th best,
    so a beam wide enough to keep every prefix returns exactly the exhaustive-search n-best. With
    ``beam_size=1`` it gives greedy search's output.

    With ``length_penalty > 0`` that exact rule must assume a live hypothesis may still grow to
    ``max_len`` tokens at no cost, so rows usually run to ``max_len``. ``stopping="early"`` instead
    bounds a live hypothesis by the score it would get if EOS came next at no cost (its log-prob over
    its length plus one), the rule most toolkits use: far fewer steps, and the same output except
    where a long continuation would have overtaken. With ``length_penalty <= 0`` both rules are the
    same.

    Subclasses change the ranking with :meth:`adjust_log_probs` (forbid or penalise tokens:
    no-repeat n-grams, constraints, coverage). Candidates are then ranked by the running sum of the
    adjusted values (``score`` is that sum, length-normalized), while :attr:`Hypothesis.log_prob`
    stays the model's own log-probability of the returned tokens: the search keeps both sums.
    Strategies that reshape the beam itself (groups of beams, say) override the other hooks:
    :meth:`start_scores`, :meth:`select_candidates` and :meth:`new_pool`; :meth:`begin_step` tells
    them, every step, which batch rows they are given and what each live hypothesis has generated.

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

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        """What ranks the candidates of this step; the default returns ``log_probs`` itself, unchanged.

        log_probs (A, K, V): the model's log-probs of each live hypothesis' next token (A batch rows
        still searching, K beams); prefix (A, K, step) long: the tokens each has generated so far (no
        BOS); step: the number of tokens generated so far. Returns (A, K, V): -inf forbids a token, a
        lower value penalises it. The search adds these values to each hypothesis' ranking sum; the
        model's own log-probs still go into :attr:`Hypothesis.log_prob`. EOS is forbidden before
        ``min_len`` after this adjustment.

        Exact stopping (and ``stopping="early"``) bounds a live hypothesis by its ranking sum so far,
        which assumes that adding a token never raises that sum: every adjusted value must be <= 0,
        as log-probs are. Forbidding and penalising keep that true. An adjustment that can raise a
        score (a bonus for covering a constraint, say) must keep its values <= 0 (e.g. clamp them,
        ``(log_probs + bonus).clamp(max=0)``), or a row may stop while a live hypothesis could still
        overtake its n-th best: the output is then no longer the best the beam can find.
        """
        return log_probs

    def begin_step(self, rows: Tensor, prefix: Tensor, step: int) -> None:
        """Called at the start of every step, before :meth:`adjust_log_probs`; the default does nothing.

        rows (A,) long: the batch rows still searching, in the order of the A rows the other hooks
        see this step (row ``a`` of their tensors is batch row ``rows[a]``); prefix (A, K, step) long:
        the tokens each live hypothesis has generated so far (no BOS); step: how many. A strategy
        whose ranking or choice depends on the row (per-row constraints, say) reads here which rows
        it is given, and what :meth:`select_candidates` needs besides the scores. What it keeps
        belongs to one search call: keep it on a per-call copy of the strategy (as
        :class:`~seq2seq_lightning.search.constrained.ConstrainedBeamSearch` does), not on a
        strategy object that other searches share.
        """

    def start_scores(self, batch_size: int, device: torch.device) -> Tensor:
        """(B, K) ranking sums of the beams before the first step: 0 for a live beam, -inf for an empty
        slot. Every beam starts from BOS; the default makes beam 0 of each row the only live one."""
        scores = torch.full((batch_size, self.beam_size), NEG_INF, device=device)
        scores[:, 0] = 0.0
        return scores

    def select_candidates(self, scores: Tensor, eos: int) -> tuple[Tensor, Tensor]:
        """Which candidates may finish and which stay live: scores (A, K, V), the ranking sum of every
        continuation -> ``first``, ``live`` (A, K) long indices into the flattened K × V candidates.
        An EOS among ``first`` finishes; ``live`` become the next beams (an EOS or a -inf candidate
        there leaves the slot empty). The default is one beam of width K
        (:func:`~seq2seq_lightning.search.functional.beam_candidates`). Only the choice is taken
        from here: the search gathers the sums it keeps from its own tensors."""
        return beam_candidates(scores, eos)

    def new_pool(self, batch_size: int, max_len: int, device: torch.device) -> NBestPool:
        """Where finished hypotheses go: by default one :class:`NBestPool` row of ``n_best`` per batch row.

        The search calls ``add(rows, ...)`` with (A, K) candidates per batch row in ``rows``,
        ``settled(rows, bound)`` with (A, K) bounds, and ``to_hypotheses()`` for the result.
        """
        return NBestPool(batch_size, self.n_best, max_len, device)

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
        beam_rank = self.start_scores(B, device).float()  # (A, K) ranking sums
        beam_lp = torch.zeros_like(beam_rank).masked_fill(~torch.isfinite(beam_rank), NEG_INF)  # (A, K) model
        beam_tok = torch.zeros(B, K, T, dtype=torch.long, device=device)  # (A, K, T)
        beam_att: Tensor | None = None  # (A, K, T, S)
        finished = self.new_pool(B, T, device)
        for t in range(T):
            logp, state = decoder.step(tokens, state)  # (A*K, V)
            A = active.numel()
            logp = logp.float().to(device).view(A, K, -1)  # (A, K, V) the model's log-probs
            self.begin_step(active, beam_tok[:, :, :t], t)
            rank_logp = self.adjust_log_probs(logp, beam_tok[:, :, :t], t)  # (A, K, V) what ranks
            if t < self.min_len:
                rank_logp = forbid_token(rank_logp, eos)
            att = last_attention(decoder)  # (A*K, S) or None
            if att is not None:
                att = att.float().to(device).view(A, K, -1)  # (A, K, S)
                if beam_att is None:
                    beam_att = att.new_zeros(A, K, T, att.size(-1))
            cand = beam_rank.unsqueeze(-1) + rank_logp  # (A, K, V)
            first, live = self.select_candidates(cand, eos)  # (A, K) indices into K*V

            # EOS candidates among ``first`` finish, with t + 1 steps (EOS included).
            f_rank, f_lp, f_origin, f_tok = _take(cand, beam_lp, logp, first)
            f_ok = (f_tok == eos) & torch.isfinite(f_rank)  # (A, K)
            if bool(f_ok.any()):  # most steps finish nothing: skip the bookkeeping then
                f_score = length_normalize(f_rank, t + 1, pen).masked_fill(~f_ok, NEG_INF)
                f_att = None
                if beam_att is not None:
                    f_att = pick_beams(beam_att, f_origin).clone()  # (A, K, T, S)
                    f_att[:, :, t] = pick_beams(att, f_origin)
                finished.add(active, f_score, f_lp, pick_beams(beam_tok, f_origin), torch.full_like(f_origin, t),
                             f_att, ended=True)

            # ``live`` become the next beams; an EOS or unreal candidate there leaves an empty slot.
            l_rank, l_lp, l_origin, l_tok = _take(cand, beam_lp, logp, live)
            empty = (l_tok == eos) | ~torch.isfinite(l_rank)  # (A, K)
            beam_rank, beam_lp = l_rank.masked_fill(empty, NEG_INF), l_lp.masked_fill(empty, NEG_INF)
            beam_tok = pick_beams(beam_tok, l_origin)
            beam_tok[:, :, t] = l_tok
            if beam_att is not None:
                beam_att = pick_beams(beam_att, l_origin)
                beam_att[:, :, t] = pick_beams(att, l_origin)

            # Rows at their step limit close their live hypotheses as they are: no EOS term, L = t + 1.
            row_t = limit[active]  # (A,)
            closing = row_t == t + 1  # (A,)
            if bool(closing.any()):
                c_rank = beam_rank[closing]
                c_score = length_normalize(c_rank, t + 1, pen).masked_fill(~torch.isfinite(c_rank), NEG_INF)
                finished.add(active[closing], c_score, beam_lp[closing], beam_tok[closing],
                             torch.full_like(c_rank, t + 1, dtype=torch.long),
                             None if beam_att is None else beam_att[closing], ended=False)

            # A row is done when no live hypothesis can reach its n-th best finished score.
            horizon = row_t if self.stopping == "exact" else row_t.clamp(max=t + 2)  # longest length allowed
            bound = best_reachable_score(beam_rank, t + 1, pen, horizon[:, None])  # (A, K)
            done = closing | finished.settled(active, bound)  # (A,)
            keep = (~done).nonzero().squeeze(1)  # (A',)
            if keep.numel() == 0:
                break  # every row is done: no more decoder calls
            if keep.numel() < A:  # freeze done rows by dropping them from the computation
                active, beam_rank, beam_lp, beam_tok = active[keep], beam_rank[keep], beam_lp[keep], beam_tok[keep]
                l_origin, l_tok = l_origin[keep], l_tok[keep]
                if beam_att is not None:
                    beam_att = beam_att[keep]
            if K > 1 or keep.numel() < A:
                state = decoder.reorder_state(state, (keep[:, None] * K + l_origin).view(-1))
            tokens = l_tok.reshape(-1)
        return finished.to_hypotheses()


def _take(cand: Tensor, beam_lp: Tensor, logp: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The chosen candidates ``index`` (A, M) into K*V -> their ranking sum, model log-prob sum, source
    beam and token, each (A, M). cand (A, K, V) ranking sums, beam_lp (A, K), logp (A, K, V) the model's."""
    V = logp.size(-1)
    origin, tok = index // V, index % V
    rank = cand.flatten(1).gather(1, index)
    return rank, beam_lp.gather(1, origin) + logp.flatten(1).gather(1, index), origin, tok
