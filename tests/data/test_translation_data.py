"""TranslationDataModule end to end on small files."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.data.translation import TranslationDataModule

PAIRS = [
    ("ein kleiner Hund", "a small dog"),
    ("die Katze", "the cat"),
    ("ein großes Haus am See", "a big house by the lake"),
    ("Hallo", "hello"),
    ("guten Morgen, Welt", "good morning, world"),
    ("das Buch", "the book"),
    ("ich sehe den Hund", "i see the dog"),
]


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> str:
    data = "".join(f"{s}\t{t}\n" for s, t in pairs).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return str(path)


def write_lines(path: Path, lines: list[str], crlf: bool = False) -> str:
    data = "".join(line + ("\r\n" if crlf else "\n") for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return str(path)


def make_dm(tmp_path: Path, **kwargs) -> TranslationDataModule:
    train = write_tsv(tmp_path / "train.tsv", PAIRS * 3)
    val = write_tsv(tmp_path / "val.tsv.gz", PAIRS[:5])
    options = {
        "train_path": train,
        "val_path": val,
        "tokenizer": "char",
        "batch_size": 4,
        "eval_batch_size": 3,
    }
    return TranslationDataModule(**{**options, **kwargs})


def check_batch(dm: TranslationDataModule, batch: dict, with_target: bool = True) -> None:
    src_tok, tgt_tok = dm.source_tokenizer, dm.target_tokenizer
    B = len(batch.index)
    assert batch.source.dtype == torch.long and batch.source.shape[0] == B
    assert batch.source.shape[1] == int(batch.source_lengths.max())
    for i in range(B):
        n = int(batch.source_lengths[i])
        row = batch.source[i].tolist()
        assert row[n - 1] == src_tok.eos_id and src_tok.eos_id not in row[: n - 1]
        assert all(t == src_tok.pad_id for t in row[n:]) and src_tok.pad_id not in row[:n]
        assert src_tok.decode(row[:n]) == batch.source_text[i][: dm.max_source_len]
        if with_target:
            m = int(batch.target_lengths[i])
            target = batch.target[i].tolist()
            assert target[0] == tgt_tok.bos_id and target[m - 1] == tgt_tok.eos_id
            assert tgt_tok.bos_id not in target[1:] and tgt_tok.eos_id not in target[: m - 1]
            assert all(t == tgt_tok.pad_id for t in target[m:])
            assert tgt_tok.decode(target) == batch.target_text[i]
    if with_target:
        assert batch.target.shape == (B, int(batch.target_lengths.max()))
    else:
        assert batch.target is None and batch.target_lengths is None


def test_tsv_end_to_end(tmp_path: Path) -> None:
    dm = make_dm(tmp_path)
    dm.setup("fit")
    seen = []
    for batch in dm.train_dataloader():
        assert len(batch.index) <= 4
        check_batch(dm, batch)
        for index, source, target in zip(batch.index.tolist(), batch.source_text, batch.target_text):
            assert (PAIRS * 3)[index] == (source, target)  # index = row in the file
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(21))
    val_seen = []
    for batch in dm.val_dataloader():
        check_batch(dm, batch)
        val_seen += batch.index.tolist()
    assert sorted(val_seen) == list(range(5))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_lang_pattern_files(tmp_path: Path, suffix: str) -> None:
    for split, pairs in [("train", PAIRS), ("test", PAIRS[:4])]:
        write_lines(tmp_path / f"{split}.de{suffix}", [s for s, _ in pairs], crlf=True)
        write_lines(tmp_path / f"{split}.en{suffix}", [t for _, t in pairs])
    dm = TranslationDataModule(
        train_path=str(tmp_path / f"train.{{lang}}{suffix}"),
        test_path=str(tmp_path / f"test.{{lang}}{suffix}"),
        source_lang="de",
        target_lang="en",
        tokenizer="bpe",
        vocab_size=60,
        batch_size=2,
    )
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert sum(len(b.index) for b in batches) == 4
    for batch in batches:
        check_batch(dm, batch)
        for index, source in zip(batch.index.tolist(), batch.source_text):
            assert PAIRS[index][0] == source
    assert dm.source_tokenizer.kind == "bpe"
    assert dm.source_tokenizer != dm.target_tokenizer  # separate vocabularies by default


def test_missing_and_misaligned_files(tmp_path: Path) -> None:
    dm = TranslationDataModule(train_path=str(tmp_path / "nothere.tsv"))
    with pytest.raises(FileNotFoundError, match="nothere.tsv"):
        dm.setup("fit")
    write_lines(tmp_path / "x.src", ["a", "b"])
    dm = TranslationDataModule(train_path=str(tmp_path / "x.{lang}"))
    with pytest.raises(FileNotFoundError, match="x.tgt"):
        _ = dm.tokenizers
    write_lines(tmp_path / "x.tgt", ["a"])
    with pytest.raises(ValueError, match=r"x\.src has 2 lines.*x\.tgt has 1 lines"):
        TranslationDataModule(train_path=str(tmp_path / "x.{lang}")).setup("fit")
    with pytest.raises(ValueError, match="neither"):
        TranslationDataModule(train_path=str(tmp_path / "x.src")).setup("fit")
    with pytest.raises(ValueError, match="train_path"):
        _ = TranslationDataModule().tokenizers
    with pytest.raises(ValueError, match="valid kinds"):
        TranslationDataModule(tokenizer="spm")


def test_empty_and_overlong_training_pairs_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = PAIRS + [("", "empty source"), ("blank target", "  "), ("x" * 50, "long source"), ("y", "z" * 40)]
    train = write_tsv(tmp_path / "train.tsv", pairs)
    dm = TranslationDataModule(train_path=train, tokenizer="char", max_source_len=30, max_target_len=30,
                               max_skipped_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.skipped["train"] == {"empty": 2, "too_long": 2}
    assert len(dm.datasets["train"]) == len(PAIRS)
    messages = " | ".join(record.getMessage() for record in caplog.records)
    assert "skipped 2 of 11 training pairs: empty" in messages
    assert "skipped 2 of 11 training pairs: longer than max_source_len=30" in messages
    assert "val" not in dm.datasets and dm.val_dataloader() == []  # no val_path: no validation


def test_predict_keeps_every_line_and_truncates_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = make_dm(tmp_path, max_source_len=12, eval_batch_size=2)
    lines = ["die Katze", "", "ein großes Haus am See", "   ", "", "Hallo"]
    path = tmp_path / "input.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    reader = TranslationDataModule(
        predict_path=str(path), max_source_len=12, eval_batch_size=2, tokenizers=dm.tokenizers
    )
    reader.setup("predict")
    assert "predict" not in reader.truncated  # streamed: counted while read
    with caplog.at_level(logging.WARNING):
        batches = list(reader.predict_dataloader())
    assert reader.truncated["predict"] == 1
    assert [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()] == [
        "truncated 1 of 6 predict inputs to max_source_len=12 / max_target_len=200 tokens"
    ]  # one warning with the total
    rows = sorted(
        (i, t, n)
        for b in batches
        for i, t, n in zip(b.index.tolist(), b.source_text, b.source_lengths.tolist())
    )  # batches are length-sorted; each row carries its line number
    assert [i for i, _, _ in rows] == list(range(6))
    assert [t for _, t, _ in rows] == lines
    assert [n for _, _, n in rows] == [10, 1, 13, 4, 1, 6]  # tokens + EOS; the long line cut to 12 tokens
    for batch in batches:
        assert batch.truncated == 0  # the loader took the count out
        check_batch(reader, batch, with_target=False)
        assert batch.target_text == [""] * len(batch.index)


def test_given_tokenizers_are_used_as_is(tmp_path: Path) -> None:
    dm = make_dm(tmp_path)
    trained = dm.tokenizers
    assert set(trained) == {"source", "target"}
    again = make_dm(tmp_path, tokenizers=trained, tokenizer="word")
    assert again.tokenizers == trained and again.source_tokenizer.kind == "char"
    assert Tokenizer.from_json(trained["source"]).encode("Hund") == again.source_tokenizer.encode("Hund")
    with pytest.raises(ValueError, match="source"):
        TranslationDataModule(tokenizers={"src": "{}"})


def test_shared_vocab(tmp_path: Path) -> None:
    dm = make_dm(tmp_path, shared_vocab=True)
    assert dm.tokenizers["source"] == dm.tokenizers["target"]
    assert dm.source_tokenizer is dm.target_tokenizer
    assert (
        dm.source_tokenizer.token_to_id("ß") is not None and dm.source_tokenizer.token_to_id("k") is not None
    )


def test_overlong_eval_pairs_are_truncated_not_dropped(tmp_path: Path) -> None:
    dm = make_dm(tmp_path, max_source_len=8, max_target_len=8)
    dm.setup("validate")
    assert len(dm.datasets["val"]) == 5 and dm.truncated["val"] > 0
    for batch in dm.val_dataloader():
        assert batch.source.shape[1] <= 9 and batch.target.shape[1] <= 10
        assert len(batch.target_text[0]) > 0


def test_state_dict_carries_the_tokenizers(tmp_path: Path) -> None:
    dm = make_dm(tmp_path)
    assert dm.state_dict() == {}  # nothing trained yet, nothing forced
    state = {"tokenizers": dm.tokenizers}
    assert dm.state_dict() == state
    fresh = TranslationDataModule()
    fresh.load_state_dict(state)
    assert fresh.tokenizers == state["tokenizers"]
    other = make_dm(tmp_path, tokenizer="word")
    assert other.tokenizers != state["tokenizers"]
    with pytest.raises(ValueError, match="differ"):
        other.load_state_dict(state)


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.epochs: dict[int, list[int]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.epochs.setdefault(self.current_epoch, []).extend(batch.index.tolist())
        return (self.weight * batch.source.float().mean()).sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/n", float(len(batch.index)), batch_size=len(batch.index))

    def predict_step(self, batch: dict, batch_idx: int) -> list[int]:
        return batch.index.tolist()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_with_a_lightning_trainer(tmp_path: Path) -> None:
    dm = make_dm(tmp_path, batch_size=2)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    orders = [model.epochs[e] for e in range(3)]
    assert all(sorted(order) == list(range(21)) for order in orders)
    assert orders[0] != orders[1] != orders[2]  # a new order each epoch
    (path := tmp_path / "in.txt").write_text("Hallo\n\ndie Katze\n", encoding="utf-8")
    predictor = TranslationDataModule(predict_path=str(path), eval_batch_size=2, tokenizers=dm.tokenizers)
    # streamed and length-sorted: the empty line first; each row carries its line number
    assert trainer.predict(model, predictor) == [[1, 0], [2]]


def test_too_many_bad_training_pairs_is_an_error(tmp_path) -> None:
    import pytest as _pytest

    from seq2seq_lightning.data.translation import TranslationDataModule

    good = [f"source {i}\ttarget {i}" for i in range(8)]
    bad = ["\tonly target", "only source\t", "   \t   "]
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(good + bad) + "\n", encoding="utf-8")
    ok = TranslationDataModule(train_path=str(path), tokenizer="char", max_skipped_fraction=0.5)
    ok.setup("fit")
    assert sum(ok.skipped["train"].values()) == 3 and len(ok.datasets["train"]) == 8
    strict = TranslationDataModule(train_path=str(path), tokenizer="char", max_skipped_fraction=0.2)
    with _pytest.raises(ValueError, match=r"3 of 11 training pairs .*train.tsv.* max_skipped_fraction=0.2"):
        strict.setup("fit")
