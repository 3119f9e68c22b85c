"""The streamed predict input: every line once, with its line number, a chunk in memory at a time."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from seq2seq_lightning.data import predict_stream
from seq2seq_lightning.data.predict_stream import PredictLoader, StreamingPredictDataset
from seq2seq_lightning.data.text import read_lines
from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.data.translation import TranslationDataModule

LINES = ["ein kleiner Hund", "", "die Katze", "   ", "ein großes Haus am See und ein Garten", "Hallo", ""]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([line for line in LINES if line.strip()] * 2, kind="char", vocab_size=200)


def write(path: Path, lines: list[str], raw_prefix: bytes = b"", crlf: bool = False) -> str:
    data = raw_prefix + "".join(line + ("\r\n" if crlf else "\n") for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return str(path)


def rows_of(batches) -> list[tuple[int, str, list[int]]]:
    """(index, text, ids without padding) of every row of every batch, in the order they came."""
    rows = []
    for b in batches:
        for k, index in enumerate(b.index.tolist()):
            n = int(b.source_lengths[k])
            rows.append((index, b.source_text[k], b.source[k, :n].tolist()))
        assert b.target is None and b.target_text == [""] * len(b.index)
    return rows


@pytest.mark.parametrize("name", ["in.txt", "in.txt.gz"])
def test_every_line_once_with_its_index(tmp_path: Path, tok: Tokenizer, name: str) -> None:
    lines = LINES * 9  # 63 lines: several chunks, a partial last one
    path = write(tmp_path / name, lines[:-1] + ["bad"], raw_prefix=b"\xef\xbb\xbf", crlf=True)
    with open(path, "ab") as f:  # invalid UTF-8 and no final newline
        f.write(gzip.compress(b"x \xff y") if name.endswith(".gz") else b"x \xff y")
    expected = read_lines(path)
    assert len(expected) == 64 and expected[-1] == "x \ufffd y" and expected[1] == ""
    ds = StreamingPredictDataset(path, tok, batch_size=4, max_source_len=None, pad_id=tok.pad_id, chunk_batches=3)
    rows = rows_of(ds)
    assert sorted(index for index, _, _ in rows) == list(range(len(expected)))
    for index, text, ids in rows:
        assert text == expected[index]
        assert ids == tok.encode(text) + [tok.eos_id]  # an empty line: EOS only


def test_chunks_are_sorted_by_length_and_read_lazily(tmp_path: Path, tok: Tokenizer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [("x" * (i % 7)) for i in range(100)]
    path = write(tmp_path / "in.txt", lines)
    consumed = []

    def counting(p):
        for line in read_lines(p):
            consumed.append(line)
            yield line

    monkeypatch.setattr(predict_stream, "iter_lines", counting)
    ds = StreamingPredictDataset(path, tok, batch_size=5, max_source_len=None, pad_id=tok.pad_id, chunk_batches=4)
    it = iter(ds)
    first = next(it)
    assert len(consumed) == 20  # one chunk read, not the file
    batches = [first, *it]
    for start in range(0, len(batches), 4):  # within a chunk: lines 20k..20k+19, shortest first
        chunk = rows_of(batches[start : start + 4])
        assert sorted(i for i, _, _ in chunk) == list(range(5 * start, 5 * start + 20))
        lengths = [len(ids) for _, _, ids in chunk]
        assert lengths == sorted(lengths)
        assert all(b.source.shape[1] == max(b.source_lengths) for b in batches[start : start + 4])


def test_ranks_and_workers_share_every_line_exactly_once(tmp_path: Path, tok: Tokenizer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [f"{i} " + "y" * (i % 5) for i in range(101)]
    path = write(tmp_path / "in.txt", lines)
    seen: dict[tuple[int, int], list[int]] = {}
    for rank in range(2):
        for worker in range(2):
            info = SimpleNamespace(id=worker, num_workers=2)
            monkeypatch.setattr(predict_stream, "get_worker_info", lambda info=info: info)
            ds = StreamingPredictDataset(path, tok, batch_size=3, max_source_len=None, pad_id=tok.pad_id,
                                         chunk_batches=2, rank=rank, world_size=2)
            rows = rows_of(ds)
            assert all(text == lines[i] for i, text, _ in rows)
            seen[rank, worker] = [i for i, _, _ in rows]
    everything = sorted(i for share in seen.values() for i in share)
    assert everything == list(range(101))  # every line exactly once
    for (rank, _), share in seen.items():
        assert share and all(i % 2 == rank for i in share)  # rank r predicts lines r, r + 2, ...
    # a rank's own lines come in chunks of 6, alternating between its workers
    assert sorted(seen[0, 0])[:6] == [0, 2, 4, 6, 8, 10] and sorted(seen[0, 1])[:6] == [12, 14, 16, 18, 20, 22]


def test_rank_comes_from_torch_distributed(tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "in.txt", [str(i) for i in range(10)])
    monkeypatch.setattr(predict_stream, "_distributed", lambda: (1, 3))
    ds = StreamingPredictDataset(path, tok, batch_size=2, max_source_len=None, pad_id=tok.pad_id)
    assert sorted(i for i, _, _ in rows_of(ds)) == [1, 4, 7]
    with pytest.raises(ValueError, match="rank 3"):
        next(iter(StreamingPredictDataset(path, tok, 2, None, tok.pad_id, rank=3, world_size=3)))


def test_truncation_is_counted_once_in_total(tmp_path: Path, tok: Tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    lines = ["Hallo", "ein großes Haus am See", "", "die Katze", "ein kleiner Hund"] * 5
    path = write(tmp_path / "in.txt", lines)
    ds = StreamingPredictDataset(path, tok, batch_size=2, max_source_len=8, pad_id=tok.pad_id, chunk_batches=2)
    batches = list(ds)
    assert sum(b.truncated for b in batches) == 15  # 3 lines of 5 are over 8 characters
    assert all(b.source_lengths.max() <= 9 for b in batches)
    ends = []
    loader = PredictLoader(ds, on_end=lambda truncated, rows: ends.append((truncated, rows)))
    assert rows_of(loader) == rows_of(batches)
    assert ends == [(15, 25)]  # once, at the end
    dm = TranslationDataModule(predict_path=path, max_source_len=8, eval_batch_size=2,
                               tokenizers={"source": tok.to_json(), "target": tok.to_json()})
    with caplog.at_level(logging.WARNING):
        assert len(rows_of(dm.predict_dataloader())) == 25
    assert dm.truncated["predict"] == 15
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("truncated 15 of 25 predict inputs")


def test_worker_processes(tmp_path: Path, tok: Tokenizer) -> None:
    lines = [f"{i} " + "z" * (i % 9) for i in range(50)]
    path = write(tmp_path / "in.txt", lines)
    dm = TranslationDataModule(predict_path=path, max_source_len=5, eval_batch_size=4, num_workers=2,
                               tokenizers={"source": tok.to_json(), "target": tok.to_json()})
    dm.dataset("predict").chunk_batches = 2  # 8 lines a chunk: both workers get several
    rows = rows_of(dm.predict_dataloader())
    assert sorted(i for i, _, _ in rows) == list(range(50))
    assert all(text == lines[i] for i, text, _ in rows)
    assert dm.truncated["predict"] == sum(len(tok.encode(line)) > 5 for line in lines)


def test_missing_file_is_named_at_setup(tmp_path: Path, tok: Tokenizer) -> None:
    dm = TranslationDataModule(predict_path=str(tmp_path / "nope.txt"),
                               tokenizers={"source": tok.to_json(), "target": tok.to_json()})
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        dm.setup("predict")


def test_empty_file_gives_no_batches(tmp_path: Path, tok: Tokenizer) -> None:
    path = write(tmp_path / "empty.txt", [])
    assert list(StreamingPredictDataset(path, tok, 4, None, tok.pad_id)) == []
