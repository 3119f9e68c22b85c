"""The embedded dates data set and its data module."""

from __future__ import annotations

import datetime
import time
from collections import Counter
from pathlib import Path

import pytest

from seq2seq_lightning.data.dates import (
    DEFAULT_LOCALES,
    FIRST_DAY,
    LAST_DAY,
    DatesDataModule,
    date_styles,
    format_date,
    generate_dates,
    make_splits,
    ordinal,
)

STYLES = date_styles()
JUNE_25 = datetime.date(2009, 6, 25)


def test_ordinal_suffixes() -> None:
    expected = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 10: "10th", 11: "11th", 12: "12th", 13: "13th",
                14: "14th", 21: "21st", 22: "22nd", 23: "23rd", 24: "24th", 30: "30th", 31: "31st",
                101: "101st", 111: "111th", 112: "112th"}  # fmt: skip
    assert {n: ordinal(n) for n in expected} == expected


@pytest.mark.parametrize(
    ("style", "text"),
    [
        ("en_US/full", "Thursday, June 25, 2009"),
        ("en_US/long", "June 25, 2009"),
        ("en_US/medium", "Jun 25, 2009"),
        ("en_GB/long", "25 June 2009"),
        ("fr_FR/full", "jeudi 25 juin 2009"),
        ("de_DE/long", "25. Juni 2009"),
        ("de_DE/medium", "25.06.2009"),
        ("es_ES/full", "jueves, 25 de junio de 2009"),
        ("en/ordinal-of", "25th of June, 2009"),
        ("en/the-ordinal-of", "the 25th of June 2009"),
        ("en/month-ordinal", "June 25th 2009"),
        ("en/month-ordinal-comma", "June 25th, 2009"),
        ("en/weekday-ordinal-of", "Thursday, the 25th of June 2009"),
    ],
)
def test_sources_by_construction(style: str, text: str) -> None:
    assert format_date(JUNE_25, style) == text


def test_ordinal_styles_use_the_right_suffix() -> None:
    for day, suffix in [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (22, "22nd"),
    ]:
        assert format_date(datetime.date(2001, 3, day), "en/ordinal-of") == f"{suffix} of March, 2001"


def test_styles() -> None:
    assert len(STYLES) == len(DEFAULT_LOCALES) * 3 + 5
    assert "en_US/full" in STYLES and "es_ES/medium" in STYLES and "en/ordinal-of" in STYLES
    assert date_styles(["fr_FR"], ["long"], ordinals=False) == ["fr_FR/long"]


def test_generated_examples_are_correct_and_balanced() -> None:
    examples = generate_dates(2000, seed=1)
    counts = Counter(example.style for example in examples)
    assert set(counts) == set(STYLES)
    assert max(counts.values()) - min(counts.values()) <= 1
    for example in examples:
        day = datetime.datetime.strptime(example.target, "%Y-%m-%d").date()  # ISO and a real date
        assert FIRST_DAY <= day <= LAST_DAY
        assert example.target == day.isoformat()
        assert example.source == format_date(day, example.style)
        assert str(day.year) in example.source
        if example.style == "en_US/long":
            assert datetime.datetime.strptime(example.source, "%B %d, %Y").date() == day
        if example.style == "en_GB/full":
            assert datetime.datetime.strptime(example.source, "%A, %d %B %Y").date() == day
        if example.style == "de_DE/medium":
            assert datetime.datetime.strptime(example.source, "%d.%m.%Y").date() == day


def test_dates_cover_the_range_uniformly() -> None:
    years = [int(example.target[:4]) for example in generate_dates(20000, seed=2)]
    assert min(years) < 1905 and max(years) > 2094
    first_half = sum(year < 2000 for year in years) / len(years)
    assert 0.47 < first_half < 0.53


def test_generation_is_seeded_and_fast() -> None:
    start = time.perf_counter()
    assert len(generate_dates(50000, seed=7)) == 50000
    assert time.perf_counter() - start < 10
    assert generate_dates(300, seed=7) == generate_dates(300, seed=7)
    assert generate_dates(300, seed=7) != generate_dates(300, seed=8)


def test_splits_are_disjoint_reproducible_and_cover_every_style() -> None:
    train, val, test = make_splits(4000, 200, 300, seed=0)
    assert (len(train), len(val), len(test)) == (4000, 200, 300)
    train_sources, train_dates = {e.source for e in train}, {e.target for e in train}
    for held_out in (val, test):
        assert not {e.source for e in held_out} & train_sources
        assert not {e.target for e in held_out} & train_dates  # held out by date
        assert len({e.target for e in held_out}) == len(held_out)  # one date per example
    assert not {e.target for e in val} & {e.target for e in test}
    for split in (train, val, test):
        assert {e.style for e in split} == set(STYLES)
    assert make_splits(4000, 200, 300, seed=0) == (train, val, test)
    assert make_splits(4000, 200, 300, seed=1)[1] != val


def test_too_many_held_out_dates() -> None:
    with pytest.raises(ValueError, match="num_val"):
        make_splits(10, 40000, 40000)


def test_dates_data_module(tmp_path: Path) -> None:
    dm = DatesDataModule(num_train=1000, num_val=100, num_test=120, batch_size=32, eval_batch_size=50)
    dm.setup("fit")
    assert dm.source_tokenizer.kind == "char" and dm.target_tokenizer.kind == "char"
    assert dm.skipped["train"] == {"empty": 0, "too_long": 0}
    batch = next(iter(dm.train_dataloader()))
    assert batch.source.shape[0] == 32
    for i in range(32):
        n = int(batch.source_lengths[i])
        assert dm.source_tokenizer.decode(batch.source[i, :n].tolist()) == batch.source_text[i]
        assert dm.target_tokenizer.decode(batch.target[i].tolist()) == batch.target_text[i]
    dm.setup("test")
    styles = dm.test_styles
    assert len(styles) == 120 and set(styles) == set(STYLES)
    test_examples = dm.examples("test")
    seen = 0
    for batch in dm.test_dataloader():
        for index, source in zip(batch.index.tolist(), batch.source_text):
            assert test_examples[index].source == source and test_examples[index].style == styles[index]
            seen += 1
    assert seen == 120

    predict = tmp_path / "dates.txt"
    predict.write_text("25th of June, 2009\n\n3. März 1999\n", encoding="utf-8")
    reloaded = DatesDataModule(num_train=1000, predict_path=str(predict), tokenizers=dm.tokenizers)
    reloaded.setup("predict")
    (batch,) = list(reloaded.predict_dataloader())
    assert sorted(batch.index.tolist()) == [0, 1, 2] and batch.target is None
    assert batch.source_lengths[batch.index.tolist().index(1)] == 1  # the empty line: EOS only
    assert reloaded.source_tokenizer == dm.source_tokenizer
