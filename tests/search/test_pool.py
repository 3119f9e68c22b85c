"""NBestPool: the n best finished hypotheses per row."""

from __future__ import annotations

import torch

from seq2seq_lightning.search import NBestPool

NEG_INF = float("-inf")


def candidates(scores, lengths, T=4):
    score = torch.tensor(scores)  # (A, M)
    length = torch.tensor(lengths)  # (A, M)
    tokens = torch.zeros(*score.shape, T, dtype=torch.long)
    for a in range(score.size(0)):
        for m in range(score.size(1)):
            tokens[a, m, : length[a, m]] = 10 * a + m + 2
    return score, score * 2, tokens, length


def test_add_keeps_the_n_best_of_each_row_best_first():
    pool = NBestPool(3, 2, 4, "cpu")
    rows = torch.tensor([0, 2])
    pool.add(rows, *candidates([[-1.0, -3.0, NEG_INF], [-2.0, NEG_INF, NEG_INF]], [[1, 2, 0], [3, 0, 0]]))
    assert pool.nth_score(torch.tensor([0, 1, 2])).tolist() == [-3.0, NEG_INF, NEG_INF]
    pool.add(torch.tensor([0]), *candidates([[-2.0]], [[4]]), ended=False)
    [row0, row1, row2] = pool.to_hypotheses()
    assert [(h.tokens, h.score, h.log_prob) for h in row0] == [([2], -1.0, -2.0), ([2] * 4, -2.0, -4.0)]
    assert row1 == []
    assert [(h.tokens, h.score) for h in row2] == [([12] * 3, -2.0)]
    assert pool.ended[0].tolist() == [True, False]


def test_ties_keep_the_earlier_entry():
    pool = NBestPool(1, 1, 4, "cpu")
    pool.add(torch.tensor([0]), *candidates([[-1.0]], [[1]]))
    pool.add(torch.tensor([0]), *candidates([[-1.0, -1.0]], [[2, 2]]))
    assert pool.to_hypotheses()[0][0].tokens == [2]


def test_settled_compares_the_nth_best_with_every_live_bound():
    pool = NBestPool(2, 1, 4, "cpu")
    pool.add(torch.tensor([0, 1]), *candidates([[-2.0], [-2.0]], [[1], [1]]))
    bound = torch.tensor([[-3.0, -2.5], [-3.0, -1.5]])  # (A, K) row 1 has a live beam that can still win
    assert pool.settled(torch.tensor([0, 1]), bound).tolist() == [True, False]


def test_attention_has_one_row_per_step():
    pool = NBestPool(1, 2, 3, "cpu")
    score, lp, tokens, length = candidates([[-1.0, -2.0]], [[1, 3]], T=3)
    attention = torch.rand(1, 2, 3, 5)
    pool.add(torch.tensor([0]), score[:, :1], lp[:, :1], tokens[:, :1], length[:, :1], attention[:, :1])
    pool.add(torch.tensor([0]), score[:, 1:], lp[:, 1:], tokens[:, 1:], length[:, 1:], attention[:, 1:],
             ended=False)
    ended, closed = pool.to_hypotheses()[0]
    assert ended.attention.shape == (2, 5) and closed.attention.shape == (3, 5)  # EOS step, no EOS step
    torch.testing.assert_close(closed.attention, attention[0, 1])
