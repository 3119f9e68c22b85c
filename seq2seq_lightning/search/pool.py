"""The n-best pool: the best finished hypotheses of every row, kept as padded tensors while searching."""

from __future__ import annotations

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis
from seq2seq_lightning.search.functional import NEG_INF, pick_beams


class NBestPool:
    """The ``n`` best finished hypotheses of each of ``num_rows`` rows, best first, on one device.

    A search adds candidates as they finish (:meth:`add`), asks whether a row can still improve
    (:meth:`settled`) and turns the pool into hypotheses at the end (:meth:`to_hypotheses`). All of it
    is tensor work over the rows given; nothing loops over rows until :meth:`to_hypotheses`. A "row"
    is whatever the strategy keeps a separate n-best for: a batch row for beam search, or e.g. a
    (batch row, group) pair for a strategy whose groups must not crowd each other out.

    Fields, R = ``num_rows``: ``score``, ``log_prob`` (R, n) float (an empty slot has score -inf);
    ``tokens`` (R, n, T) long (zero after the hypothesis' length); ``length`` (R, n) long, tokens
    without EOS; ``ended`` (R, n) bool, whether it ended with EOS (else it was closed at its step
    limit); ``attention`` (R, n, T, S) or None until a candidate with attention is added.

    Args:
        num_rows: number of rows R.
        n: hypotheses kept per row.
        max_len: the step limit T (longest token sequence).
        device: where the tensors live.
    """

    def __init__(self, num_rows: int, n: int, max_len: int, device: torch.device | str) -> None:
        self.n, self.max_len = n, max_len
        self.score = torch.full((num_rows, n), NEG_INF, device=device)
        self.log_prob = torch.zeros(num_rows, n, device=device)
        self.tokens = torch.zeros(num_rows, n, max_len, dtype=torch.long, device=device)
        self.length = torch.zeros(num_rows, n, dtype=torch.long, device=device)
        self.ended = torch.zeros(num_rows, n, dtype=torch.bool, device=device)
        self.attention: Tensor | None = None

    def add(self, rows: Tensor, score: Tensor, log_prob: Tensor, tokens: Tensor, length: Tensor,
            attention: Tensor | None = None, *, ended: bool | Tensor = True) -> None:
        """Merge M candidates of each of ``rows`` (A,) long, distinct, into their n best.

        score, log_prob, length (A, M) (score -inf: not a candidate); tokens (A, M, T); attention
        (A, M, T, S) or None; ended: a bool for all candidates or (A, M). ``score`` ranks (what the
        strategy ranked by), ``log_prob`` is carried along. Ties keep the earlier entry first: those
        already in the pool, then candidates in the order given.
        """
        if attention is not None and self.attention is None:
            r, n, t = self.tokens.shape
            self.attention = attention.new_zeros(r, n, t, attention.size(-1))
        ended = torch.as_tensor(ended, device=score.device).expand_as(score)
        top, pick = torch.cat([self.score[rows], score], 1).sort(dim=1, descending=True, stable=True)
        pick = pick[:, : self.n]  # (A, n) best first
        self.score[rows] = top[:, : self.n]
        self.log_prob[rows] = torch.cat([self.log_prob[rows], log_prob], 1).gather(1, pick)
        self.length[rows] = torch.cat([self.length[rows], length], 1).gather(1, pick)
        self.ended[rows] = torch.cat([self.ended[rows], ended], 1).gather(1, pick)
        self.tokens[rows] = pick_beams(torch.cat([self.tokens[rows], tokens], 1), pick)
        if attention is not None:
            self.attention[rows] = pick_beams(torch.cat([self.attention[rows], attention], 1), pick)

    def nth_score(self, rows: Tensor) -> Tensor:
        """(A,) the n-th best score of each of ``rows``, -inf while it holds fewer than n."""
        return self.score[rows, -1]

    def settled(self, rows: Tensor, bound: Tensor) -> Tensor:
        """(A,) bool: no live hypothesis can still enter the n best of ``rows`` (A,).

        bound (A, K): the best score each live hypothesis of the row can still reach (-inf when dead).
        """
        return self.nth_score(rows) >= bound.amax(dim=1)

    def to_hypotheses(self) -> list[list[Hypothesis]]:
        """One best-first list per row; the attention of a hypothesis that ended with EOS has one
        more step (the EOS step) than it has tokens."""
        scores, lps, lens = self.score.tolist(), self.log_prob.tolist(), self.length.tolist()
        ids, ends = self.tokens.tolist(), self.ended.tolist()
        att = None if self.attention is None else self.attention.cpu()
        results: list[list[Hypothesis]] = []
        for r, row_scores in enumerate(scores):
            row = []
            for j, s in enumerate(row_scores):
                if s == NEG_INF:
                    break
                n = lens[r][j]
                steps = n + int(ends[r][j])
                row.append(Hypothesis(tokens=ids[r][j][:n], log_prob=lps[r][j], score=s,
                                      attention=None if att is None else att[r, j, :steps].clone()))
            results.append(row)
        return results
