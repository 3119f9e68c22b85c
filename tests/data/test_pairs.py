"""Pair files to score: TSV and JSON-lines parsing, the streamed pair batches (every line once, in
place, sorted by length within chunks, sharded), error rows and their counts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from seq2seq_lightning.data.images import ImageTransform
from seq2seq_lightning.data.pairs import (
    ImagePairStream,
    PairLoader,
    TextPairBatch,
    TextPairStream,
    is_json_lines,
    parse_pair,
    reading_pairs,
)
from seq2seq_lightning.data.tokenizer import Tokenizer

PAIRS = [("ein Hund", "a dog"), ("die Katze sitzt", "the cat sits"), ("", "empty source"), ("Haus", ""),
         ("x", "tab\tinside")]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([t for pair in PAIRS for t in pair if t] * 2, kind="char", vocab_size=200)


def test_format_is_told_by_the_name() -> None:
    assert is_json_lines("a.jsonl") and is_json_lines("a.JSON") and is_json_lines("a.jsonl.gz")
    assert not is_json_lines("a.tsv") and not is_json_lines("a.txt.gz") and not is_json_lines("pairs")


def test_parse_pair() -> None:
    assert parse_pair("a\tb\tc", json_lines=False) == ("a", "b\tc")
    assert parse_pair("\t", json_lines=False) == ("", "")
    assert parse_pair('{"image": "p.png", "caption": "c", "x": 1}', True, ("image", "caption")) == ("p.png", "c")
    for line, message in [("no tab", "no tab between source and target"), ("", "no tab")]:
        with pytest.raises(ValueError, match=message):
            parse_pair(line, json_lines=False)
    for line, message in [("{", "invalid JSON at column 2"), ("[1]", "expected a JSON object"),
                          ('{"source": "a"}', "key 'target' is missing"),
                          ('{"source": null, "target": "b"}', "key 'source' is not a string")]:
        with pytest.raises(ValueError, match=message):
            parse_pair(line, json_lines=True)


def rows_of(batches) -> list[tuple[int, str, str, list[int], list[int], str | None]]:
    rows = []
    for b in batches:
        assert isinstance(b, TextPairBatch) and len(b.errors) == len(b)
        for k, index in enumerate(b.index.tolist()):
            rows.append((index, b.source_text[k], b.target_text[k], b.source[k, : int(b.source_lengths[k])].tolist(),
                         b.target[k, : int(b.target_lengths[k])].tolist(), b.errors[k]))
    return rows


@pytest.mark.parametrize("name", ["pairs.tsv", "pairs.tsv.gz", "pairs.jsonl"])
def test_every_line_once_in_place_with_error_rows(tmp_path: Path, tok: Tokenizer, name: str) -> None:
    good = PAIRS * 5
    if name.endswith(".jsonl"):
        lines = [json.dumps({"source": s, "target": t}) for s, t in good] + ["{broken"]
    else:
        lines = [f"{s}\t{t}" for s, t in good] + ["no tab"]
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    stream = TextPairStream(path, tok, tok, batch_size=3, max_source_len=4, pad_id=tok.pad_id, chunk_batches=2)
    batches = list(stream)
    rows = rows_of(batches)
    assert sorted(r[0] for r in rows) == list(range(len(lines)))
    for index, source, target, source_ids, target_ids, error in rows:
        if index == len(lines) - 1:
            assert error and error.startswith(f"line {len(lines)} of {path}:")
            continue
        assert error is None and (source, target) == good[index]
        assert source_ids == tok.encode(source)[:4] + [tok.eos_id]  # sources cut as predict cuts them
        assert target_ids == [tok.bos_id, *tok.encode(target), tok.eos_id]  # targets never cut
    # chunks of 6 lines, each sorted by (source, target) length before it is cut into batches
    for start in range(0, len(rows), 6):
        keys = [(len(r[3]), len(r[4])) for r in rows[start : start + 6]]
        assert keys == sorted(keys)
    assert sum(b.malformed for b in batches) == 1
    assert sum(b.truncated for b in batches) == sum(len(tok.encode(s)) > 4 for s, _ in good) > 0


def test_loader_counts_errors_once_and_shards(tmp_path: Path, tok: Tokenizer) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("a\tb\nbad\nc\td\nworse\n", encoding="utf-8")
    ends = []
    loader = PairLoader(TextPairStream(path, tok, tok, 2, None, tok.pad_id),
                        on_errors=lambda *counts: ends.append(counts))
    assert sum(len(b) for b in loader) == 4 and ends == [(2, 2, 4)]
    seen = []
    for rank in range(2):
        stream = TextPairStream(path, tok, tok, 2, None, tok.pad_id, rank=rank, world_size=2)
        seen += [i for b in stream for i in b.index.tolist()]
    assert sorted(seen) == [0, 1, 2, 3]


def test_image_pairs(tmp_path: Path, tok: Tokenizer) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    (tmp_path / "img" / "bad.png").write_text("not a picture")
    path = tmp_path / "pairs.tsv"
    path.write_text(f"img/red.png\tA Dog.\nimg/bad.png\ta dog\nmissing tab\n{tmp_path / 'img' / 'red.png'}\t\n",
                    encoding="utf-8")
    stream = ImagePairStream(path, tok, ImageTransform(16), batch_size=8)
    (batch,) = list(stream)
    order = batch.index.tolist()
    errors = {i: e for i, e in zip(order, batch.errors)}
    assert errors[0] is None and errors[3] is None
    assert "unreadable image" in errors[1] and "no tab between image and caption" in errors[2]
    assert batch.images.shape == (4, 3, 16, 16) and batch.malformed == 1
    row = order.index(0)
    assert batch.references[row] == ["a dog"]  # normalised (lowercase) as the data module's references
    assert batch.target[row, : int(batch.target_lengths[row])].tolist() == [tok.bos_id, *tok.encode("a dog"),
                                                                            tok.eos_id]


def test_reading_pairs_switches_the_data_module(tmp_path: Path) -> None:
    from seq2seq_lightning.data.translation import TranslationDataModule

    dm = TranslationDataModule(predict_path=str(tmp_path / "p.tsv"), tokenizers={"source": "x", "target": "x"})
    assert dm.scoring is False
    with reading_pairs(dm):
        assert dm.scoring is True
    assert dm.scoring is False
    with pytest.raises(ValueError, match="cannot read pairs"), reading_pairs(object()):
        pass
