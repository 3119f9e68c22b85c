"""Robust line reading, parallel/TSV files and pair filtering."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from seq2seq_lightning.data.text import filter_pairs, iter_lines, read_lines, read_parallel, read_tsv


def write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\n", [""]),
        (b"a", ["a"]),
        (b"a\n", ["a"]),
        (b"a\nb", ["a", "b"]),
        (b"a\n\nb\n\n", ["a", "", "b", ""]),
        (b"\n\n\n", ["", "", ""]),
        (b"a\r\nb\r\n\r\n", ["a", "b", ""]),  # CRLF
        (b"a\rb\n", ["a\rb"]),  # a lone \r is not a line break
        (b"a\r\r\n", ["a\r"]),  # only one trailing \r is dropped
        ("x\u2028y\x0cz\n".encode(), ["x\u2028y\x0cz"]),  # split on \n only
        (b"\xef\xbb\xbfhello\nworld\n", ["hello", "world"]),  # leading BOM dropped
        (b"hello\n\xef\xbb\xbfworld\n", ["hello", "\ufeffworld"]),  # only a leading one
        (b"bad \xff\xfe byte\n", ["bad \ufffd\ufffd byte"]),  # invalid UTF-8 replaced
        (
            "caf\u00e9 \U0001f389 \u05e9\u05dc\u05d5\u05dd\n".encode(),
            ["caf\u00e9 \U0001f389 \u05e9\u05dc\u05d5\u05dd"],
        ),
    ],
)
@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_read_lines_rules(tmp_path: Path, data: bytes, expected: list[str], suffix: str) -> None:
    path = write(tmp_path / f"input{suffix}", data)
    assert read_lines(path) == expected
    assert list(iter_lines(str(path))) == expected


def test_gzip_is_decompressed_by_suffix_only(tmp_path: Path) -> None:
    compressed = gzip.compress(b"one\ntwo\n")
    (tmp_path / "a.gz").write_bytes(compressed)
    (tmp_path / "a.txt").write_bytes(compressed)
    assert read_lines(tmp_path / "a.gz") == ["one", "two"]
    assert read_lines(tmp_path / "a.txt") != ["one", "two"]  # read as (invalid) text


def test_exact_line_count_of_a_large_file(tmp_path: Path) -> None:
    lines = [f"line {i}" if i % 10 else "" for i in range(10_000)]
    path = write(tmp_path / "big.txt.gz", ("\r\n".join(lines) + "\r\n").encode())
    assert read_lines(path) == lines


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_lines(missing)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        iter_lines(missing)  # raised when called, not at the first next()


def test_read_parallel(tmp_path: Path) -> None:
    src = write(tmp_path / "train.de", b"Hallo\n\nWelt\n")
    tgt = write(tmp_path / "train.en.gz", b"Hello\r\n\r\nWorld\r\n")
    assert read_parallel(src, tgt) == [("Hallo", "Hello"), ("", ""), ("Welt", "World")]


def test_read_parallel_mismatch_names_both_files_and_counts(tmp_path: Path) -> None:
    src = write(tmp_path / "left.src", b"a\nb\nc\n")
    tgt = write(tmp_path / "right.tgt", b"x\ny\n")
    with pytest.raises(ValueError) as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert "left.src" in message and "right.tgt" in message
    assert "3 lines" in message and "2 lines" in message


def test_read_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.tsv", b"\xef\xbb\xbfa\tb\r\n\tempty source\nx\ty\tz\n")
    assert read_tsv(path) == [("a", "b"), ("", "empty source"), ("x", "y\tz")]


def test_read_tsv_line_without_tab_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.tsv", b"a\tb\nc\td\nno tab here\ne\tf\n")
    with pytest.raises(ValueError, match=r"broken\.tsv.*line 3"):
        read_tsv(path)


def test_filter_pairs_counts_and_logs_each_reason(caplog: pytest.LogCaptureFixture) -> None:
    pairs = [
        ("ok", "fine"),
        ("", "x"),  # empty source
        ("x", "   "),  # blank target
        ("a" * 11, "x"),  # source too long
        ("x", "b" * 6),  # target too long
        ("edge", "abcde"),  # exactly at the limits
    ]
    with caplog.at_level(logging.WARNING, logger="seq2seq_lightning.data.text"):
        result = filter_pairs(pairs, max_source_len=10, max_target_len=5)
    kept, skipped = result
    assert kept == [("ok", "fine"), ("edge", "abcde")]
    assert result.indices == [0, 5]
    assert skipped == {"empty": 2, "too_long": 2}
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert any("skipped 2 of 6" in m and "empty" in m for m in messages)
    assert any("skipped 2 of 6" in m and "max_source_len=10" in m for m in messages)


def test_filter_pairs_with_given_lengths_and_no_limits(caplog: pytest.LogCaptureFixture) -> None:
    pairs = [("a b c", "x"), ("d", "y z")]
    kept, skipped = filter_pairs(pairs, max_source_len=2, lengths=[(3, 1), (1, 2)])
    assert kept == [("d", "y z")] and skipped == {"empty": 0, "too_long": 1}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kept, skipped = filter_pairs(pairs)
    assert kept == pairs and skipped == {"empty": 0, "too_long": 0}
    assert not caplog.records  # nothing skipped, nothing logged
    with pytest.raises(ValueError, match="lengths"):
        filter_pairs(pairs, lengths=[(1, 1)])
