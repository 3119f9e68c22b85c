"""The plugin's encoder and decoder pass seq2seq-lightning's conformance kit."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest
from seq2seq_transformer import TransformerEncoder

from seq2seq_lightning.testing import check_decoder, check_encoder

SMALL = {"d_model": 32, "num_heads": 4, "num_layers": 2}


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_encoder_conforms(positions: str) -> None:
    check_encoder(TransformerEncoder, **SMALL, dim_feedforward=64, positions=positions)


def test_encoder_with_dropout_and_one_layer_conforms() -> None:
    check_encoder(TransformerEncoder, d_model=16, num_heads=2, num_layers=1, dim_feedforward=32, dropout=0.3)


def _decoder_class() -> type:
    if importlib.util.find_spec("seq2seq_transformer.decoder") is None:
        pytest.skip("seq2seq_transformer.decoder does not exist yet (the TransformerDecoder is being added)")
    return importlib.import_module("seq2seq_transformer.decoder").TransformerDecoder


def _small(cls: type, **extra: object) -> dict:
    """The small sizes, for the arguments the decoder's constructor has."""
    params = inspect.signature(cls).parameters
    wanted = {**SMALL, "ff_size": 64, "dim_feedforward": 64, **extra}
    return {k: v for k, v in wanted.items() if k in params}


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_decoder_conforms(positions: str) -> None:
    cls = _decoder_class()
    check_decoder(cls, **_small(cls, positions=positions))


def test_decoder_with_untied_embeddings_and_a_wider_memory_conforms() -> None:
    cls = _decoder_class()
    check_decoder(cls, memory_size=48, **_small(cls, tie_embeddings=False, num_layers=1))
