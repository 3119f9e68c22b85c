"""PredictionWriter: input order from out-of-order batches, a bounded buffer, streaming shard merge."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from seq2seq_lightning.callbacks.writer import PredictionWriter


def row(index: int) -> dict:
    return {"index": index, "input": f"in {index}", "output": f"out {index}", "score": -float(index),
            "nbest": [{"output": f"out {index}", "score": -float(index), "log_prob": -float(index)}]}


def trainer(world: int = 1, rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(world_size=world, global_rank=rank, strategy=SimpleNamespace(barrier=lambda name: None))


def feed(writer: PredictionWriter, t: SimpleNamespace, batches: list[list[int]]) -> list[int]:
    """Write the batches; return the number of pending rows after each."""
    pending = []
    for k, batch in enumerate(batches):
        writer.write_on_batch_end(t, None, [row(i) for i in batch], None, None, k, 0)
        pending.append(writer.pending)
    return pending


def test_rows_in_order_are_written_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    writer, t = PredictionWriter(out), trainer()
    writer.on_predict_start(t, None)
    batches = [list(range(k, min(k + 7, 1000))) for k in range(0, 1000, 7)]
    assert max(feed(writer, t, batches)) == 0  # nothing waits: memory does not grow with the input
    assert writer.written == 1000 and not out.exists()
    writer.on_predict_end(t, None)
    assert out.read_text(encoding="utf-8").splitlines() == [f"out {i}" for i in range(1000)]
    assert not list(tmp_path.glob(".*.partial"))


def test_out_of_order_rows_wait_only_within_their_window(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer, t = PredictionWriter(out), trainer()
    writer.on_predict_start(t, None)
    rng, window, batches = random.Random(0), 40, []
    for start in range(0, 1000, window):  # each window of 40 rows shuffled into batches of 8
        indices = list(range(start, start + window))
        rng.shuffle(indices)
        batches += [indices[k : k + 8] for k in range(0, window, 8)]
    pending = feed(writer, t, batches)
    assert max(pending) < window and pending[4::5] == [0] * 25  # a window ends: everything written
    writer.on_predict_end(t, None)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in records] == [f"in {i}" for i in range(1000)]
    assert records[3] == {k: row(3)[k] for k in ("input", "output", "score", "nbest")}


def test_duplicates_are_written_once(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    writer, t = PredictionWriter(out), trainer()
    writer.on_predict_start(t, None)
    feed(writer, t, [[1, 0], [2, 3], [0, 4], [4, 1]])
    writer.on_predict_end(t, None)
    assert out.read_text(encoding="utf-8").splitlines() == [f"out {i}" for i in range(5)]
    assert writer.written == 5


def test_distributed_shards_stream_and_merge_in_order(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    n, world = 203, 2
    writers = [PredictionWriter(out) for _ in range(world)]
    trainers = [trainer(world, rank) for rank in range(world)]
    rng = random.Random(1)
    for rank, (writer, t) in enumerate(zip(writers, trainers)):
        writer.on_predict_start(t, None)
        own = list(range(rank, n, world))
        batches = []
        for start in range(0, len(own), 12):  # chunks of 12 own lines, shuffled into batches of 4
            chunk = own[start : start + 12]
            rng.shuffle(chunk)
            batches += [chunk[k : k + 4] for k in range(0, len(chunk), 4)]
        if rank == 1:
            batches.append([0])  # a padding sampler's repeat of another rank's row
        pending = feed(writer, t, batches)
        assert max(pending) < 12 and pending[2] == 0  # a rank's own stride counts as in order
    shard0 = tmp_path / ".out.txt.rank0.partial"
    for rank in (1, 0):  # rank 0 merges after every shard is written
        writers[rank].on_predict_end(trainers[rank], None)
    assert out.read_text(encoding="utf-8").splitlines() == [f"out {i}" for i in range(n)]
    assert writers[0].written == n and not shard0.exists() and not list(tmp_path.glob(".*.partial"))


def test_merge_names_a_shard_rank_0_cannot_see(tmp_path: Path) -> None:
    from seq2seq_lightning.callbacks.shards import DistributedPredictError

    out = tmp_path / "out.txt"
    writers, trainers = [PredictionWriter(out) for _ in range(2)], [trainer(2, rank) for rank in range(2)]
    for writer, t in zip(writers, trainers):
        writer.on_predict_start(t, None)
    writers[1].on_predict_end(trainers[1], None)
    (tmp_path / ".out.txt.rank1.partial").unlink()  # as if rank 1 wrote it on another node's disk
    with pytest.raises(DistributedPredictError, match=r"\.out\.txt\.rank1\.partial.*every process sees"):
        writers[0].on_predict_end(trainers[0], None)
    assert not out.exists()


def test_barrier_errors_name_the_missing_ranks() -> None:
    from seq2seq_lightning.callbacks.shards import _missing_ranks

    assert _missing_ranks("[Rank 0]: Ranks 1, 3 failed to pass monitoredBarrier in 5000 ms") == "1, 3"
    assert _missing_ranks("Rank 2 successfully reached monitoredBarrier, but received errors while waiting for "
                          "send/recv from rank 0. Please check rank 0 logs for faulty rank.") == "0"
    assert _missing_ranks("Connection closed by peer") is None


def test_exception_removes_partial_files(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    writer, t = PredictionWriter(out), trainer()
    writer.on_predict_start(t, None)
    feed(writer, t, [[0, 1]])
    writer.on_exception(t, None, RuntimeError("stop"))
    assert not out.exists() and not list(tmp_path.glob(".*.partial"))


class _Echo:
    """A LightningModule (built lazily) whose predictions echo the input reversed."""

    @staticmethod
    def make():
        import lightning as L
        import torch

        class Echo(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Linear(1, 1)

            def predict_step(self, batch, batch_idx):
                return [{"index": int(i), "input": t, "output": t[::-1], "score": 0.0, "nbest": []}
                        for i, t in zip(batch.index, batch.source_text)]

        return Echo()


@pytest.mark.parametrize("n", [0, 1, 300])
def test_streamed_input_through_a_trainer(tmp_path: Path, n: int) -> None:
    import lightning as L

    from seq2seq_lightning.data.tokenizer import Tokenizer
    from seq2seq_lightning.data.translation import TranslationDataModule

    lines = [("abc " * (i % 5)).strip() + str(i % 3) if i % 7 else "" for i in range(n)]
    src = tmp_path / "in.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tok = Tokenizer.train(["abc 012"], kind="char", vocab_size=50).to_json()
    dm = TranslationDataModule(predict_path=str(src), eval_batch_size=4, tokenizers={"source": tok, "target": tok})
    dm.setup("predict")
    dm.dataset("predict").chunk_batches = 5  # chunks of 20 lines
    out = tmp_path / "out.txt"
    writer = PredictionWriter(out)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[writer], default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        assert trainer.predict(_Echo.make(), dm, return_predictions=False) is None
    assert not [w for w in caught if "batch indices" in str(w.message)]  # the writer needs none
    assert out.read_text(encoding="utf-8").splitlines() == [line[::-1] for line in lines]  # empty input: empty file
    assert writer.written == n and writer.pending == 0
