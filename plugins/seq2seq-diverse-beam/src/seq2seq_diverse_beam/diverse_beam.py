"""Diverse beam search: beam groups decoded in turn, each penalised for repeating earlier groups' tokens."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seq2seq_diverse_beam.functional import (
    NEG_INF,
    count_tokens,
    find_device,
    length_score,
    rows_pick,
    score_bound,
)
from seq2seq_diverse_beam.pool import FinishedPool, merge_groups
from seq2seq_lightning.search import Hypothesis, SearchStrategy, StepDecoder


class DiverseBeamSearch(SearchStrategy):
    """Beam search whose beams are split into groups that are pushed apart (Hamming diversity).

    The ``beam_size`` beams of a row form ``num_groups`` groups of ``beam_size // num_groups``.
    At every step the groups choose in order: group g ranks its candidates by
    ``log_prob - diversity_strength * count`` where ``count`` is how many times earlier groups
    chose that token at this step for the same row, then keeps its best like a plain beam (EOS
    candidates ranked within the group's width finish, the best others stay live). The penalty only
    steers the choice: a hypothesis' ``log_prob`` is the model's own sum and
    ``score = log_prob / L ** length_penalty`` (``L`` counts the EOS).

    Each group keeps its own ``min(n_best, beam_size // num_groups)`` best finished hypotheses, so
    one group cannot crowd the others out of the n-best list; the result is the ``n_best`` best of
    all groups, best first, a sequence reached by two groups returned once. All rows × beams go
    through one decoder call per step (the loop over groups only slices that step's log-probs). A
    row stops once no group has a live hypothesis that could still enter its group's best, so the
    result equals running every row to ``max_len``. With ``num_groups=1`` it is plain beam search.

    Args:
        beam_size: live hypotheses kept per row, over all groups; a multiple of ``num_groups``.
        num_groups: number of groups the beams are split into.
        diversity_strength: penalty per earlier-group use of a token at the same step; 0 makes the
            groups independent copies of a narrower beam (duplicates are returned once).
        length_penalty: exponent of the length normalization of the final scores; 0 ranks by raw
            log-probability, larger values favour longer outputs.
        n_best: number of hypotheses returned per row, best first; at most ``beam_size``.
        min_len: EOS is forbidden until this many tokens have been generated.
    """

    def __init__(self, beam_size: int = 4, num_groups: int = 2, diversity_strength: float = 0.5,
                 length_penalty: float = 0.0, n_best: int = 1, min_len: int = 0) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if num_groups < 1 or beam_size % num_groups != 0:
            raise ValueError(f"num_groups must be >= 1 and divide beam_size ({beam_size}), got {num_groups}")
        if diversity_strength < 0:
            raise ValueError(f"diversity_strength must be >= 0, got {diversity_strength}")
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
        if min_len < 0:
            raise ValueError(f"min_len must be >= 0, got {min_len}")
        self.beam_size = beam_size
        self.num_groups = num_groups
        self.diversity_strength = float(diversity_strength)
        self.length_penalty = float(length_penalty)
        self.n_best = n_best
        self.min_len = min_len

    def _group_step(self, beam_lp: Tensor, logp: Tensor, chosen: Tensor, eos: int, t: int,
                    offset: int) -> tuple[Tensor, ...]:
        """One group's choice. beam_lp (A, W), logp (A, W, V), chosen (A, V) earlier groups' counts.

        Returns finish score, finish log_prob, finish origin (A, W) and live log_prob, live origin,
        live token (A, W); origins are beam indices within the row (``offset`` added).
        """
        A, W, V = logp.shape
        total = beam_lp.unsqueeze(-1) + logp  # (A, W, V) model log-probs of every continuation
        ranked = total
        if self.diversity_strength > 0:
            ranked = total - self.diversity_strength * chosen.unsqueeze(1)
        top_rank, top_idx = ranked.view(A, W * V).topk(min(2 * W, W * V), dim=1)  # (A, C) best first
        top_lp = total.view(A, W * V).gather(1, top_idx)  # (A, C) without the penalty
        origin, tok = top_idx // V + offset, top_idx % V  # (A, C)
        is_eos = tok == eos
        real = torch.isfinite(top_rank)
        # EOS candidates ranked within the group's width finish with t + 1 steps.
        f_ok = is_eos[:, :W] & real[:, :W]
        f_score = length_score(top_lp[:, :W], t + 1, self.length_penalty).masked_fill(~f_ok, NEG_INF)
        # The best W others stay live; an EOS among them leaves a dead slot.
        live = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :W]  # (A, W)
        l_lp = top_lp.gather(1, live).masked_fill(is_eos.gather(1, live) | ~real.gather(1, live), NEG_INF)
        return f_score, top_lp[:, :W], origin[:, :W], l_lp, origin.gather(1, live), tok.gather(1, live)

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int) -> list[list[Hypothesis]]:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1 (decoding steps, EOS included), got {max_len}")
        B, K, T, G = batch_size, self.beam_size, max_len, self.num_groups
        W, pen = K // G, self.length_penalty
        device = find_device(decoder, state)
        if K > 1:  # one decoder row per (batch row, beam); beams g*W .. g*W+W-1 form group g
            state = decoder.reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))
        tokens = torch.full((B * K,), bos, dtype=torch.long, device=device)  # (A*K,)
        active = torch.arange(B, device=device)  # (A,) batch rows still searching
        beam_lp = torch.full((B, K), NEG_INF, device=device)  # (A, K)
        beam_lp[:, ::W] = 0.0  # every group starts from one live beam
        beam_tok = torch.zeros(B, K, T, dtype=torch.long, device=device)  # (A, K, T)
        beam_att: Tensor | None = None  # (A, K, T, S)
        # Each group keeps its own best finished hypotheses, so that no group crowds out the others.
        pool = FinishedPool(B * G, min(self.n_best, W), T, device)
        groups = torch.arange(G, device=device)
        for t in range(T):
            logp, state = decoder.step(tokens, state)  # (A*K, V)
            A = active.numel()
            logp = logp.float().to(device).view(A, K, -1)  # (A, K, V)
            if t < self.min_len:
                logp = logp.clone()
                logp[..., eos] = NEG_INF
            att = getattr(decoder, "last_attention", None)  # (A*K, S) or None
            if att is not None:
                att = att.float().to(device).view(A, K, -1)  # (A, K, S)
                if beam_att is None:
                    beam_att = att.new_zeros(A, K, T, att.size(-1))

            chosen = logp.new_zeros(A, logp.size(-1))  # (A, V) uses of each token at this step so far
            parts = []
            for g in range(G):
                group = slice(g * W, (g + 1) * W)
                part = self._group_step(beam_lp[:, group], logp[:, group], chosen, eos, t, g * W)
                f_score, _, _, l_lp, _, l_tok = part
                if g + 1 < G and self.diversity_strength > 0:
                    chosen = count_tokens(chosen, l_tok, torch.isfinite(l_lp))
                    chosen[:, eos] += torch.isfinite(f_score).sum(1).to(chosen.dtype)
                parts.append(part)
            f_score, f_lp, f_origin, l_lp, l_origin, l_tok = (torch.cat(x, 1) for x in zip(*parts))  # (A, K)

            f_att = None
            if beam_att is not None:
                f_att = rows_pick(beam_att, f_origin).clone()  # (A, K, T, S)
                f_att[:, :, t] = rows_pick(att, f_origin)
            pool_rows = (active[:, None] * G + groups).view(-1)  # (A*G,) one pool row per (row, group)
            pool.add(pool_rows, *by_group(G, f_score, f_lp, rows_pick(beam_tok, f_origin),
                                          torch.full_like(f_origin, t), f_att))

            beam_lp = l_lp
            beam_tok = rows_pick(beam_tok, l_origin)
            beam_tok[:, :, t] = l_tok
            if beam_att is not None:
                beam_att = rows_pick(beam_att, l_origin)
                beam_att[:, :, t] = rows_pick(att, l_origin)

            if t + 1 == T:  # close the live hypotheses as they are: no EOS term, L = max_len
                c_score = length_score(beam_lp, T, pen).masked_fill(~torch.isfinite(beam_lp), NEG_INF)
                pool.add(pool_rows, *by_group(G, c_score, beam_lp, beam_tok, torch.full_like(l_tok, T), beam_att))
                break

            # A row is done when no group has a live hypothesis that could still enter its pool.
            bound = score_bound(beam_lp, t + 1, pen, T).view(A, G, W).amax(dim=2)  # (A, G)
            improvable = pool.nth_score(pool_rows).view(A, G) < bound  # (A, G)
            keep = improvable.any(1).nonzero().squeeze(1)  # (A',) rows still searching
            if keep.numel() == 0:
                break
            if keep.numel() < A:  # drop finished rows from the decoder's computation
                active, beam_lp, beam_tok = active[keep], beam_lp[keep], beam_tok[keep]
                l_origin, l_tok = l_origin[keep], l_tok[keep]
                if beam_att is not None:
                    beam_att = beam_att[keep]
            if K > 1 or keep.numel() < A:
                state = decoder.reorder_state(state, (keep[:, None] * K + l_origin).view(-1))
            tokens = l_tok.reshape(-1)
        return merge_groups(pool.to_hypotheses(), G, self.n_best)


def by_group(num_groups: int, *fields: Tensor | None) -> list[Tensor | None]:
    """Fields (A, K, ...) with beams in group order -> (A * G, K / G, ...): one row per (row, group)."""
    out = []
    for x in fields:
        out.append(None if x is None else x.reshape(x.size(0) * num_groups, x.size(1) // num_groups, *x.shape[2:]))
    return out
