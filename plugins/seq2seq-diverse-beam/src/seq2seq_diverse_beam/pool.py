"""The n best finished hypotheses of every (batch row, beam group), held as padded tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from seq2seq_diverse_beam.functional import NEG_INF, rows_pick
from seq2seq_lightning.search import Hypothesis


class FinishedPool:
    """Best-first finished hypotheses per pool row (diverse beam search keeps one per batch row
    and group, so that no group can crowd the others out).

    Fields: score, log_prob (R, n) float (an empty slot has score -inf); tokens (R, n, T) long
    (zero after the hypothesis' length); length (R, n) long; attention (R, n, T, S) or None.
    """

    def __init__(self, num_rows: int, n: int, max_len: int, device: torch.device) -> None:
        self.n, self.max_len = n, max_len
        self.score = torch.full((num_rows, n), NEG_INF, device=device)
        self.log_prob = torch.zeros(num_rows, n, device=device)
        self.tokens = torch.zeros(num_rows, n, max_len, dtype=torch.long, device=device)
        self.length = torch.zeros(num_rows, n, dtype=torch.long, device=device)
        self.attention: Tensor | None = None

    def add(self, rows: Tensor, score: Tensor, log_prob: Tensor, tokens: Tensor, length: Tensor,
            attention: Tensor | None) -> None:
        """Merge M candidates of each of the pool rows ``rows`` (A,) into their n best.

        score, log_prob, length (A, M) (score -inf: not a candidate); tokens (A, M, T);
        attention (A, M, T, S) or None.
        """
        if attention is not None and self.attention is None:
            b, n, t = self.tokens.shape
            self.attention = attention.new_zeros(b, n, t, attention.size(-1))
        all_score = torch.cat([self.score[rows], score], 1)  # (A, n + M)
        top, pick = all_score.sort(dim=1, descending=True, stable=True)  # best first, earlier entries win ties
        top, pick = top[:, : self.n], pick[:, : self.n]  # (A, n)
        self.score[rows] = top
        self.log_prob[rows] = torch.cat([self.log_prob[rows], log_prob], 1).gather(1, pick)
        self.length[rows] = torch.cat([self.length[rows], length], 1).gather(1, pick)
        self.tokens[rows] = rows_pick(torch.cat([self.tokens[rows], tokens], 1), pick)
        if attention is not None:
            self.attention[rows] = rows_pick(torch.cat([self.attention[rows], attention], 1), pick)

    def nth_score(self, rows: Tensor) -> Tensor:
        """(A,) the n-th best finished score of the rows, -inf while a row has fewer than n."""
        return self.score[rows, -1]

    def to_hypotheses(self) -> list[list[Hypothesis]]:
        """One best-first list per pool row. A hypothesis shorter than ``max_len`` ended with EOS,
        so its attention has one more step (the EOS step) than it has tokens."""
        scores, lps, lens = self.score.tolist(), self.log_prob.tolist(), self.length.tolist()
        ids = self.tokens.tolist()
        att = None if self.attention is None else self.attention.cpu()
        results: list[list[Hypothesis]] = []
        for b, row_scores in enumerate(scores):
            row = []
            for j, s in enumerate(row_scores):
                if s == NEG_INF:
                    break
                n = lens[b][j]
                steps = n + int(n < self.max_len)
                row.append(Hypothesis(tokens=ids[b][j][:n], log_prob=lps[b][j], score=s,
                                      attention=None if att is None else att[b, j, :steps].clone()))
            results.append(row)
        return results


def merge_groups(per_group: list[list[Hypothesis]], num_groups: int, n: int) -> list[list[Hypothesis]]:
    """Pool rows ``b * num_groups + g`` -> one list per batch row: the ``n`` best of all its groups,
    best first (earlier groups win ties), a token sequence found by two groups kept once."""
    merged = []
    for start in range(0, len(per_group), num_groups):
        hyps = [h for group in per_group[start : start + num_groups] for h in group]
        hyps.sort(key=lambda h: h.score, reverse=True)  # stable
        seen: set[tuple[int, ...]] = set()
        row = []
        for h in hyps:
            key = tuple(h.tokens)
            if key not in seen:
                seen.add(key)
                row.append(h)
        merged.append(row[:n])
    return merged
