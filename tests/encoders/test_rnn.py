"""The RNN text encoder: shapes, masks, and padding that never changes a row's result."""

from __future__ import annotations

import pytest
import torch

from seq2seq_lightning.encoders.rnn import RNNEncoder


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_and_mask(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    enc = RNNEncoder(vocab_size=20, embedding_size=8, hidden_size=6, num_layers=2, cell=cell,
                     bidirectional=bidirectional)
    tokens = torch.randint(4, 20, (3, 7))
    lengths = torch.tensor([7, 3, 1])
    out = enc(tokens, lengths)
    d = 12 if bidirectional else 6
    assert enc.output_size == d
    assert out.memory.shape == (3, 7, d) and out.summary.shape == (3, d)
    assert out.mask.tolist()[1] == [True] * 3 + [False] * 4
    assert torch.all(out.memory[1, 3:] == 0)  # padded positions carry nothing


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_padding_never_changes_a_row(cell: str) -> None:
    torch.manual_seed(1)
    enc = RNNEncoder(vocab_size=30, embedding_size=8, hidden_size=5, num_layers=2, cell=cell).eval()
    row = torch.randint(4, 30, (1, 4))
    alone = enc(row, torch.tensor([4]))
    other = torch.randint(4, 30, (1, 9))
    padded = torch.zeros(2, 9, dtype=torch.long)
    padded[0, :4] = row[0]
    padded[0, 4:] = torch.randint(4, 30, (5,))  # garbage after the length must not matter either
    padded[1] = other[0]
    batch = enc(padded, torch.tensor([4, 9]))
    torch.testing.assert_close(batch.memory[0, :4], alone.memory[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch.summary[0], alone.summary[0], rtol=1e-5, atol=1e-6)


def test_rejects_unknown_cell() -> None:
    with pytest.raises(ValueError, match="gru' or 'lstm"):
        RNNEncoder(vocab_size=5, cell="rnn")
