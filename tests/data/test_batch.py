"""Typed batches: sub-batches, and Lightning moving them as collections."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import move_data_to_device

from seq2seq_lightning.data.batch import ImageBatch, TextBatch


def text_batch() -> TextBatch:
    return TextBatch(source=torch.tensor([[5, 3, 0], [6, 7, 3], [3, 0, 0]]), source_lengths=torch.tensor([2, 3, 1]),
                     target=torch.tensor([[2, 9, 3], [2, 8, 3], [2, 3, 0]]), target_lengths=torch.tensor([3, 3, 2]),
                     index=torch.tensor([4, 0, 7]), source_text=["a", "bc", ""], target_text=["x", "y", ""],
                     truncated=1)


def test_rows_picks_tensor_rows_and_list_items_and_keeps_counts() -> None:
    sub = text_batch().rows([2, 0])
    assert isinstance(sub, TextBatch) and len(sub) == 2
    assert sub.source.tolist() == [[3, 0, 0], [5, 3, 0]] and sub.source_lengths.tolist() == [1, 2]
    assert sub.index.tolist() == [7, 4] and sub.source_text == ["", "a"] and sub.target_text == ["", "x"]
    assert sub.truncated == 1


def test_image_rows_keep_none_fields() -> None:
    batch = ImageBatch(images=torch.zeros(3, 3, 4, 4), index=torch.arange(3), source_text=["p", "q", "r"],
                       target_text=["a", "b", ""], references=[["a"], ["b", "c"], []], errors=[None, "bad", None],
                       skipped=2)
    sub = batch.rows([1])
    assert sub.images.shape == (1, 3, 4, 4) and sub.references == [["b", "c"]] and sub.errors == ["bad"]
    assert sub.target is None and sub.skipped == 2


def test_lightning_moves_a_typed_batch_as_a_collection() -> None:
    batch = text_batch()
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, TextBatch) and torch.equal(moved.source, batch.source)
    assert moved.source_text == batch.source_text and moved.truncated == 1
