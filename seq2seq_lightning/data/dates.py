"""The embedded default task: human-written dates -> ISO ``YYYY-MM-DD``, generated offline.

Sources are Babel's ``full``, ``long`` and ``medium`` date formats in several locales
(``"Thursday, June 25, 2009"``, ``"25. Juni 2009"``, ``"jueves, 25 de junio de 2009"``...) plus
English ordinal forms (``"25th of June, 2009"``, ``"the 25th of June 2009"``, ``"June 25th 2009"``...).
Dates are uniform over 1900-01-01 .. 2099-12-31. Everything is a function of the seed.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from babel import Locale

from seq2seq_lightning.data.translation import TranslationDataModule

DEFAULT_LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES")
DEFAULT_FORMATS = ("full", "long", "medium")
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
NUM_DAYS = (LAST_DAY - FIRST_DAY).days + 1

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]  # fmt: skip
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n: int) -> str:
    """``1 -> "1st"``, ``2 -> "2nd"``, ``3 -> "3rd"``, ``11 -> "11th"``, ``22 -> "22nd"``..."""
    if 11 <= n % 100 <= 13:
        return f"{n}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# English ordinal styles: style name -> formatter.
ORDINAL_STYLES: dict[str, Callable[[datetime.date], str]] = {
    "en/ordinal-of": lambda d: f"{ordinal(d.day)} of {_MONTHS[d.month - 1]}, {d.year}",
    "en/the-ordinal-of": lambda d: f"the {ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}",
    "en/month-ordinal": lambda d: f"{_MONTHS[d.month - 1]} {ordinal(d.day)} {d.year}",
    "en/month-ordinal-comma": lambda d: f"{_MONTHS[d.month - 1]} {ordinal(d.day)}, {d.year}",
    "en/weekday-ordinal-of": lambda d: (
        f"{_WEEKDAYS[d.weekday()]}, the {ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}"
    ),
}


@dataclass(frozen=True)
class DateExample:
    source: str  # the date as a person writes it
    target: str  # ISO YYYY-MM-DD
    style: str  # "en_US/full", "en/ordinal-of", ...


def date_styles(
    locales: Sequence[str] = DEFAULT_LOCALES, formats: Sequence[str] = DEFAULT_FORMATS, ordinals: bool = True
) -> list[str]:
    """The style names generated for these settings, in a fixed order."""
    styles = [f"{locale}/{fmt}" for locale in locales for fmt in formats]
    return styles + (list(ORDINAL_STYLES) if ordinals else [])


@cache
def _babel_formatter(style: str) -> Callable[[datetime.date], str]:
    locale_name, fmt = style.split("/")
    locale = Locale.parse(locale_name)
    if fmt not in DEFAULT_FORMATS + ("short",):
        raise ValueError(f"unknown date format {fmt!r} in style {style!r}")
    pattern = locale.date_formats[fmt]  # parsed once; applying it is the fast path of format_date
    return lambda day: pattern.apply(day, locale)


def format_date(day: datetime.date, style: str) -> str:
    """``day`` written in ``style`` (a name from :func:`date_styles`)."""
    formatter = ORDINAL_STYLES.get(style) or _babel_formatter(style)
    return formatter(day)


def _examples(days: Sequence[int], styles: Sequence[str], rng: random.Random) -> list[DateExample]:
    """One example per day offset; styles cycle so each appears ``len(days) // len(styles)`` times or one more."""
    assigned = [styles[i % len(styles)] for i in range(len(days))]
    rng.shuffle(assigned)
    examples = []
    for offset, style in zip(days, assigned):
        day = FIRST_DAY + datetime.timedelta(days=offset)
        examples.append(DateExample(format_date(day, style), day.isoformat(), style))
    return examples


def generate_dates(
    n: int,
    seed: int = 0,
    locales: Sequence[str] = DEFAULT_LOCALES,
    formats: Sequence[str] = DEFAULT_FORMATS,
    ordinals: bool = True,
) -> list[DateExample]:
    """``n`` examples with dates uniform over 1900-01-01 .. 2099-12-31 and styles balanced."""
    rng = random.Random(seed)
    days = [rng.randrange(NUM_DAYS) for _ in range(n)]
    return _examples(days, date_styles(locales, formats, ordinals), rng)


def make_splits(
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    locales: Sequence[str] = DEFAULT_LOCALES,
    formats: Sequence[str] = DEFAULT_FORMATS,
    ordinals: bool = True,
) -> tuple[list[DateExample], list[DateExample], list[DateExample]]:
    """Train, validation and test examples on disjoint sets of dates.

    Validation and test each get their own distinct dates; training draws (with replacement) from the
    dates left, so no validation or test source can occur in training. Styles cycle within each split,
    so every style is in every split of at least ``len(styles)`` examples.
    """
    held_out = num_val + num_test
    if held_out > NUM_DAYS // 2:
        raise ValueError(f"num_val + num_test = {held_out} is too large; at most {NUM_DAYS // 2} dates")
    rng = random.Random(seed)
    styles = date_styles(locales, formats, ordinals)
    chosen = rng.sample(range(NUM_DAYS), held_out)
    val_days, test_days = chosen[:num_val], chosen[num_val:]
    excluded = set(chosen)
    train_pool = [day for day in range(NUM_DAYS) if day not in excluded]
    train_days = [train_pool[rng.randrange(len(train_pool))] for _ in range(num_train)]
    # each split draws its styles from its own stream: val/test do not depend on num_train
    return (
        _examples(train_days, styles, random.Random(f"{seed}/train")),
        _examples(val_days, styles, random.Random(f"{seed}/val")),
        _examples(test_days, styles, random.Random(f"{seed}/test")),
    )


class DatesDataModule(TranslationDataModule):
    """Dates written by people -> ISO dates, generated on the fly (no files, no downloads).

    Character tokenizers on both sides. Validation and test dates never occur in training; the
    style of each validation/test example is in ``val_styles``/``test_styles`` (aligned with the
    batch ``index``) for per-style accuracy.

    Args:
        num_train: training examples (dates drawn with replacement from those not held out).
        num_val: validation examples, each on its own held-out date.
        num_test: test examples, each on its own held-out date.
        locales: Babel locales whose full, long and medium formats are generated.
        ordinals: also generate English ordinal forms ("the 25th of June 2009").
        seed: seed of the generated data and of the training batch order.
        batch_size: examples per training batch.
        eval_batch_size: examples per validation/test/predict batch; None means batch_size.
        num_workers: DataLoader worker processes.
        predict_path: text file of dates to convert, one per line (``seq2seq score``: pairs to score,
            ``source<TAB>target`` or JSON lines with "source" and "target").
        tokenizers: serialized tokenizers ({"source": json, "target": json}) to use instead of
            training new ones; filled from a checkpoint when resuming or predicting.
    """

    def __init__(
        self,
        num_train: int = 40000,
        num_val: int = 1000,
        num_test: int = 2000,
        locales: list[str] = list(DEFAULT_LOCALES),  # noqa: B006 (read-only; shown by --help)
        ordinals: bool = True,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        predict_path: str | None = None,
        tokenizers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            predict_path=predict_path,
            tokenizer="char",
            vocab_size=1000,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            max_source_len=100,
            max_target_len=20,
            num_workers=num_workers,
            seed=seed,
            tokenizers=tokenizers,
        )
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.locales, self.ordinals = list(locales), ordinals
        self._examples: dict[str, list[DateExample]] | None = None

    def examples(self, split: str) -> list[DateExample]:
        """The generated examples of ``split`` ("train", "val" or "test")."""
        if self._examples is None:
            train, val, test = make_splits(
                self.num_train, self.num_val, self.num_test, self.seed, self.locales, ordinals=self.ordinals
            )
            self._examples = {"train": train, "val": val, "test": test}
        return self._examples[split]

    def has_split(self, split: str) -> bool:
        return split in ("train", "val", "test") or super().has_split(split)

    def _read_pairs(self, split: str) -> list[tuple[str, str]]:
        return [(example.source, example.target) for example in self.examples(split)]

    @property
    def val_styles(self) -> list[str]:
        return [example.style for example in self.examples("val")]

    @property
    def test_styles(self) -> list[str]:
        return [example.style for example in self.examples("test")]
