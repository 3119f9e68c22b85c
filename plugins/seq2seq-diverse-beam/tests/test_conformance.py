"""Diverse beam search passes seq2seq-lightning's conformance kit."""

from __future__ import annotations

import pytest
from seq2seq_diverse_beam import DiverseBeamSearch

from seq2seq_lightning.testing import check_strategy


@pytest.mark.parametrize("kwargs", [
    {},
    {"beam_size": 4, "num_groups": 2},
    {"beam_size": 6, "num_groups": 3, "diversity_strength": 2.0, "n_best": 3},
    {"beam_size": 4, "num_groups": 2, "diversity_strength": 0.0, "n_best": 4},
    {"beam_size": 4, "num_groups": 4, "length_penalty": 1.0, "n_best": 2},
    {"beam_size": 3, "num_groups": 1, "length_penalty": 0.6},
    {"beam_size": 4, "num_groups": 2, "min_len": 2},
], ids=["defaults", "4-2", "6-3-strong-nbest", "no-diversity", "4-4-penalty", "one-group-penalty", "min-len"])
def test_diverse_beam_conforms(kwargs: dict) -> None:
    check_strategy(DiverseBeamSearch, **kwargs)
