"""JSON-lines predict input: source, prefix and constraints per line; malformed lines become error rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from seq2seq_lightning.data.predict_stream import (
    LineError,
    PredictLoader,
    PredictRecord,
    StreamingPredictDataset,
    parse_json_line,
    parse_text_line,
    predict_parser,
)
from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.data.translation import TranslationDataModule


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(["ein kleiner Hund", "die Katze", "2009-06-25", "a dog"] * 3, kind="char", vocab_size=100)


@pytest.mark.parametrize(("line", "want"), [
    ('{"source": "die Katze"}', PredictRecord("die Katze")),
    ('{"source": "x", "prefix": "a", "constraints": ["b", "c d"], "id": 7}', PredictRecord("x", "a", ["b", "c d"])),
    ('{"source": "", "prefix": null, "constraints": null}', PredictRecord("")),
])
def test_json_lines_are_records(line: str, want: PredictRecord) -> None:
    assert parse_json_line(line) == want


@pytest.mark.parametrize(("line", "why"), [
    ("{not json", "invalid JSON"),
    ("", "invalid JSON"),
    ('["source"]', "expected a JSON object"),
    ('{"prefix": "a"}', 'key "source" is missing'),
    ('{"source": 3}', 'key "source" is not a string (got int)'),
    ('{"source": "x", "prefix": ["a"]}', 'key "prefix" is not a string (got list)'),
    ('{"source": "x", "constraints": "a"}', 'key "constraints" is not a list of strings'),
    ('{"source": "x", "constraints": ["a", 1]}', 'key "constraints" is not a list of strings'),
])
def test_malformed_json_lines_say_why(line: str, why: str) -> None:
    parsed = parse_json_line(line)
    assert isinstance(parsed, LineError) and why in parsed.message


def test_the_parser_is_chosen_by_the_file_name() -> None:
    assert predict_parser("in.jsonl") is parse_json_line and predict_parser("IN.JSONL.gz") is parse_json_line
    for name in ("in.txt", "in.json", "in.txt.gz", "in"):
        assert predict_parser(name) is parse_text_line
    assert parse_text_line('{"source": "a"}') == PredictRecord('{"source": "a"}')  # text is text


def test_records_become_rows_in_place_with_prefix_constraints_and_errors(tmp_path: Path, tok: Tokenizer) -> None:
    lines = [json.dumps({"source": "ein kleiner Hund", "prefix": "2009-", "constraints": ["06", "-25"]}),
             "{broken",
             json.dumps({"source": "die Katze"}),
             json.dumps({"source": 5}),
             json.dumps({"source": "a dog", "constraints": ["", "dog"]})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = StreamingPredictDataset(path, tok, batch_size=8, max_source_len=None, pad_id=tok.pad_id,
                                 target_tokenizer=tok)
    [batch] = list(ds)
    rows = {index: k for k, index in enumerate(batch.index.tolist())}
    assert sorted(rows) == list(range(5))
    k = rows[0]
    assert batch.source_text[k] == "ein kleiner Hund"
    assert batch.prefix[k] == tok.encode("2009-")
    assert batch.constraints[k] == [tok.encode("06"), tok.encode("-25")]
    assert batch.constraints[rows[4]] == [tok.encode("dog")]  # an empty phrase is dropped
    assert batch.prefix[rows[2]] == [] and batch.constraints[rows[2]] == []
    for bad, why in ((1, "invalid JSON"), (3, 'key "source" is not a string')):
        k = rows[bad]
        assert batch.errors[k].startswith(f"line {bad + 1} of {path}: ") and why in batch.errors[k]
        assert batch.source_text[k] == lines[bad]  # the raw line, to find it by
        assert int(batch.source_lengths[k]) == 1  # EOS only: nothing to translate
    assert [batch.errors[rows[i]] for i in (0, 2, 4)] == [None, None, None]


def test_a_plain_text_input_is_read_as_before(tmp_path: Path, tok: Tokenizer) -> None:
    path = tmp_path / "in.txt"
    path.write_text('{"source": "x"}\ndie Katze\n\n', encoding="utf-8")
    [batch] = list(StreamingPredictDataset(path, tok, batch_size=8, max_source_len=None, pad_id=tok.pad_id))
    assert sorted(batch.source_text) == sorted(["", '{"source": "x"}', "die Katze"])
    assert batch.prefix is None and batch.constraints is None and batch.errors is None


def test_the_loader_counts_error_rows(tmp_path: Path, tok: Tokenizer) -> None:
    lines = ['{"source": "a dog"}', "nope", '{"source": "die Katze"}', "[]"] * 5
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = StreamingPredictDataset(path, tok, batch_size=3, max_source_len=None, pad_id=tok.pad_id, chunk_batches=2)
    seen: list[tuple[int, int]] = []
    assert sum(len(b) for b in PredictLoader(ds, on_malformed=lambda bad, rows: seen.append((bad, rows)))) == 20
    assert seen == [(10, 20)]


def test_the_data_module_warns_once_about_malformed_lines(tmp_path: Path, tok: Tokenizer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    lines = ['{"source": "a dog", "prefix": "2009-"}', "nope", '{"source": "die Katze"}', "[]"] * 5
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dm = TranslationDataModule(predict_path=str(path), tokenizers={"source": tok.to_json(), "target": tok.to_json()})
    dm.setup("predict")
    with caplog.at_level(logging.WARNING):
        assert sum(len(b) for b in dm.predict_dataloader()) == 20
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 1 and "10 of 20" in warnings[0].getMessage() and dm.malformed == 10
