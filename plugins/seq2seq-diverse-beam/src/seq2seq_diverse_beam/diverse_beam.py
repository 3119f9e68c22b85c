"""Diverse beam search: beam groups that choose in turn, each penalised for repeating earlier groups' tokens."""

from __future__ import annotations

import torch
from torch import Tensor

from seq2seq_lightning.search import Hypothesis, NBestPool
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.functional import NEG_INF, beam_candidates


class DiverseBeamSearch(BeamSearch):
    """Beam search whose beams are split into groups that are pushed apart (Hamming diversity).

    The ``beam_size`` beams of a row form ``num_groups`` groups of ``W = beam_size // num_groups``,
    each starting from its own BOS beam. At every step the groups choose in order: group g ranks its
    candidates by ``log_prob - diversity_strength * count`` where ``count`` is how many times earlier
    groups chose that token at this step for the same row, then keeps its best like a plain beam of
    width W (EOS candidates ranked within W finish, the best others stay live). The penalty only
    steers the choice: a hypothesis' ``log_prob`` is the model's own sum and
    ``score = log_prob / L ** length_penalty`` (``L`` counts the EOS).

    Each group keeps its own ``min(n_best, W)`` best finished hypotheses, so one group cannot crowd
    the others out of the n-best list; the result is the ``n_best`` best of all groups, best first, a
    sequence reached by two groups returned once. The step loop, exact stopping and per-row limits
    are the built-in beam search's: a row stops once no group has a live hypothesis that could
    still enter its group's best. With ``num_groups=1`` it is plain beam search.

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
        super().__init__(beam_size=beam_size, length_penalty=length_penalty, n_best=n_best, min_len=min_len)
        if num_groups < 1 or beam_size % num_groups != 0:
            raise ValueError(f"num_groups must be >= 1 and divide beam_size ({beam_size}), got {num_groups}")
        if diversity_strength < 0:
            raise ValueError(f"diversity_strength must be >= 0, got {diversity_strength}")
        self.num_groups = num_groups
        self.diversity_strength = float(diversity_strength)

    def start_scores(self, batch_size: int, device: torch.device) -> Tensor:
        """(B, K): the first beam of every group is live."""
        scores = torch.full((batch_size, self.beam_size), NEG_INF, device=device)
        scores[:, :: self.beam_size // self.num_groups] = 0.0
        return scores

    def select_candidates(self, scores: Tensor, eos: int) -> tuple[Tensor, Tensor]:
        """scores (A, K, V) -> first, live (A, K): each group's plain-beam choice under the penalty."""
        A, K, V = scores.shape
        W = K // self.num_groups
        chosen = scores.new_zeros(A, V)  # (A, V) uses of each token by earlier groups at this step
        firsts, lives = [], []
        for g in range(self.num_groups):
            group = scores[:, g * W:(g + 1) * W]  # (A, W, V)
            if g > 0 and self.diversity_strength > 0:
                group = group - self.diversity_strength * chosen.unsqueeze(1)
            first, live = beam_candidates(group, eos)  # (A, W) into this group's W*V
            flat = group.reshape(A, W * V)
            finishes = (first % V == eos) & torch.isfinite(flat.gather(1, first))
            stays = (live % V != eos) & torch.isfinite(flat.gather(1, live))
            chosen = chosen.scatter_add(1, live % V, stays.to(chosen.dtype))
            chosen[:, eos] += finishes.sum(1).to(chosen.dtype)
            firsts.append(first + g * W * V)
            lives.append(live + g * W * V)
        return torch.cat(firsts, 1), torch.cat(lives, 1)

    def new_pool(self, batch_size: int, max_len: int, device: torch.device) -> NBestPool:
        return GroupPool(batch_size, self.num_groups, min(self.n_best, self.beam_size // self.num_groups),
                         self.n_best, max_len, device)


class GroupPool(NBestPool):
    """One n-best pool row per (batch row, group): pool row ``b * G + g`` takes the candidates of
    group g's beams; the result merges a batch row's groups."""

    def __init__(self, batch_size: int, num_groups: int, per_group: int, n_best: int, max_len: int,
                 device: torch.device) -> None:
        super().__init__(batch_size * num_groups, per_group, max_len, device)
        self.num_groups, self.n_best = num_groups, n_best

    def _split(self, rows: Tensor, *fields: Tensor | None) -> list:
        """rows (A,) and fields (A, K, ...) -> pool rows (A*G,) and fields (A*G, K/G, ...)."""
        G = self.num_groups
        pool_rows = (rows[:, None] * G + torch.arange(G, device=rows.device)).view(-1)
        return [pool_rows] + [None if x is None else x.reshape(x.size(0) * G, x.size(1) // G, *x.shape[2:])
                              for x in fields]

    def add(self, rows: Tensor, score: Tensor, log_prob: Tensor, tokens: Tensor, length: Tensor,
            attention: Tensor | None = None, *, ended: bool | Tensor = True) -> None:
        super().add(*self._split(rows, score, log_prob, tokens, length, attention), ended=ended)

    def settled(self, rows: Tensor, bound: Tensor) -> Tensor:
        """(A,) bool: every group of the row is settled against its own beams' bounds (A, K)."""
        pool_rows, group_bound = self._split(rows, bound)
        return super().settled(pool_rows, group_bound).view(-1, self.num_groups).all(1)

    def to_hypotheses(self) -> list[list[Hypothesis]]:
        """Per batch row the ``n_best`` best of its groups, best first (earlier groups win ties), a
        token sequence found by two groups kept once."""
        per_group, G = super().to_hypotheses(), self.num_groups
        merged = []
        for start in range(0, len(per_group), G):
            hyps = sorted((h for group in per_group[start:start + G] for h in group), key=lambda h: h.score,
                          reverse=True)
            row: list[Hypothesis] = []
            seen: set[tuple[int, ...]] = set()
            for h in hyps:
                if tuple(h.tokens) not in seen:
                    seen.add(tuple(h.tokens))
                    row.append(h)
            merged.append(row[:self.n_best])
        return merged
