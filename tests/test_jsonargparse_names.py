"""The one dependency on jsonargparse internals (registry names as class paths), against the installed version."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from seq2seq_lightning import _jsonargparse_names
from seq2seq_lightning.decoders import Decoder
from seq2seq_lightning.encoders import Encoder
from seq2seq_lightning.search import SearchStrategy

ROOT = Path(__file__).resolve().parents[1]


def test_supported_range_is_the_pinned_one_and_holds_the_installed_version() -> None:
    pin = re.search(r'"jsonargparse[^"]*>=([\d.]+),<([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    low, high = pin.groups()

    def as_tuple(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in (v.split(".") + ["0"])[:2])

    assert _jsonargparse_names.SUPPORTED == (as_tuple(low), as_tuple(high))
    assert _jsonargparse_names.SUPPORTED[0] <= as_tuple(version("jsonargparse")) < _jsonargparse_names.SUPPORTED[1]


def parse(hint: object, value: object) -> object:
    _jsonargparse_names.install()
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=hint)
    return parser.parse_args([f"--x={value}"]).x


def test_one_name_resolves_by_the_type_it_is_given_for() -> None:
    assert parse(Callable[[int], Encoder], "rnn").class_path == "seq2seq_lightning.encoders.rnn.RNNEncoder"
    assert parse(Callable[[int, int], Decoder], "rnn").class_path == "seq2seq_lightning.decoders.rnn.RNNDecoder"
    assert parse(SearchStrategy, "beam").class_path == "seq2seq_lightning.search.beam.BeamSearch"
    assert parse(SearchStrategy, "seq2seq_lightning.search.greedy.GreedySearch").class_path.endswith("GreedySearch")


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(Exception, match="known decoder names: .*rnn"):
        parse(Callable[[int, int], Decoder], "nope")


def test_install_is_idempotent() -> None:
    from jsonargparse import _typehints

    _jsonargparse_names.install()
    wrapped = _typehints.resolve_class_path_by_name
    _jsonargparse_names.install()
    assert _typehints.resolve_class_path_by_name is wrapped
