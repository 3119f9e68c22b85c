"""seq2seq-contract-example against seq2seq-lightning's published contracts.

The conformance kit on both classes, the registries and ``seq2seq plugins``, and one tiny
``seq2seq fit`` / ``seq2seq predict`` / ``translate`` round trip on the embedded dates task.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seq2seq_lightning.decoders import Decoder
from seq2seq_lightning.encoders import EncoderOutput
from seq2seq_lightning.registry import DECODERS, STRATEGIES
from seq2seq_lightning.search import SearchStrategy
from seq2seq_lightning.testing import check_decoder, check_strategy

# Skipped, not an error, where the distribution is not installed (a suite that collects every tests/ folder).
example = pytest.importorskip("seq2seq_contract_example", reason="seq2seq-contract-example is not installed")
ContractGRUDecoder = example.ContractGRUDecoder
NoRepeatBeamSearch = example.NoRepeatBeamSearch

# tests/thirdparty/seq2seq-contract-example/tests/<this file>: the repository root is four parents up.
ROOT = Path(__file__).resolve().parents[4]
DATES = ROOT / "configs" / "translation" / "dates.yaml"
BIN = Path(sys.executable).parent
SEQ2SEQ = [str(BIN / "seq2seq")] if (BIN / "seq2seq").exists() else [sys.executable, "-m", "seq2seq_lightning.cli"]

TINY_MODEL = [  # the decoder under test plus a small encoder, so that training takes seconds
    "--model.decoder=contract_gru",
    "--model.decoder.embedding_size=16",
    "--model.decoder.hidden_size=32",
    "--model.encoder.embedding_size=16",
    "--model.encoder.hidden_size=32",
]
SOURCES = ["13.07.1914", "12 ene 2071", "", "April 1, 2038", "mardi 3 mars 1998"]


def seq2seq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "COLUMNS": "200"}
    result = subprocess.run([*SEQ2SEQ, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"seq2seq {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def repeated_bigrams(tokens: list) -> list:
    bigrams = list(itertools.pairwise(tokens))
    return sorted({b for b in bigrams if bigrams.count(b) > 1})


# --- conformance kit and registries ---------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"embedding_size": 8, "hidden_size": 16}, {"embedding_size": 4, "hidden_size": 12, "dropout": 0.5}])
def test_decoder_conformance(kwargs):
    check_decoder(ContractGRUDecoder, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"beam_size": 3}, {"beam_size": 2, "ngram_size": 1, "length_penalty": 1.0}, {"ngram_size": 3, "n_best": 2}],
)
def test_strategy_conformance(kwargs):
    check_strategy(NoRepeatBeamSearch, **kwargs)


def test_registered_by_entry_points():
    assert DECODERS.get("contract_gru") is ContractGRUDecoder
    assert STRATEGIES.get("no_repeat_beam") is NoRepeatBeamSearch
    assert issubclass(ContractGRUDecoder, Decoder)
    assert issubclass(NoRepeatBeamSearch, STRATEGIES.get("beam"))
    assert issubclass(NoRepeatBeamSearch, SearchStrategy)
    decoder = DECODERS.build("contract_gru", vocab_size=11, memory_size=5, hidden_size=8)
    assert isinstance(decoder, ContractGRUDecoder)
    search = STRATEGIES.build("no_repeat_beam", beam_size=3, ngram_size=3)
    assert (search.ngram_size, search.beam_size) == (3, 3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="ngram_size"):
        NoRepeatBeamSearch(ngram_size=0)
    with pytest.raises(ValueError, match="dropout"):
        ContractGRUDecoder(vocab_size=5, memory_size=3, dropout=1.0)


# --- what is particular to these classes ------------------------------------------------------


class Parrot:
    """A bigram-table step decoder: EOS 0, BOS 1, words 2, 3, 4. It likes "2 3 2 3 ..."."""

    NEXT = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0],  # after EOS (never fed)
                         [0.0, 0.0, 0.8, 0.1, 0.1],  # after BOS
                         [0.1, 0.0, 0.0, 0.8, 0.1],  # after 2
                         [0.1, 0.0, 0.7, 0.0, 0.2],  # after 3
                         [0.9, 0.0, 0.05, 0.05, 0.0]]).log()  # after 4

    def step(self, tokens, state):  # tokens (N,) -> log-probs (N, V), state
        return self.NEXT[tokens], state

    def reorder_state(self, state, index):
        return state[index]


def test_no_repeat_beam_forbids_repeated_bigrams():
    args = {"batch_size": 2, "bos": 1, "eos": 0, "max_len": 6}
    plain = STRATEGIES.build("beam", beam_size=4).search(Parrot(), torch.zeros(2, 1), **args)
    fresh = NoRepeatBeamSearch(beam_size=4).search(Parrot(), torch.zeros(2, 1), **args)
    assert plain[0][0].tokens == [2, 3, 2, 3, 2, 3]
    for row in fresh:
        assert row[0].tokens == [2, 3, 4]  # after "2 3 2", 3 would repeat "2 3"
        assert math.isclose(row[0].log_prob, math.log(0.8 * 0.8 * 0.2 * 0.9), abs_tol=1e-5)  # the model's
    # n-grams longer than any output forbid nothing: plain beam search
    [[long]] = NoRepeatBeamSearch(beam_size=4, ngram_size=7).search(Parrot(), torch.zeros(1, 1), **{**args, "batch_size": 1})
    assert (long.tokens, long.log_prob) == (plain[0][0].tokens, plain[0][0].log_prob)


def test_decoder_attention_and_initial_state():
    torch.manual_seed(0)
    decoder = ContractGRUDecoder(vocab_size=9, memory_size=4, embedding_size=6, hidden_size=5).eval()
    mask = torch.tensor([[True, True, True], [True, False, False]])
    enc = EncoderOutput(memory=torch.randn(2, 3, 4), mask=mask, summary=torch.randn(2, 4))
    logits, attention = decoder(torch.tensor([[1, 3, 4], [1, 5, 6]]), enc)
    assert logits.shape == (2, 3, 9) and attention.shape == (2, 3, 3)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 3))
    assert torch.equal(attention[1, :, 1:], torch.zeros(3, 2))
    other = EncoderOutput(memory=enc.memory, mask=mask, summary=enc.summary + 1.0)
    assert not torch.allclose(decoder(torch.tensor([[1, 3, 4], [1, 5, 6]]), other)[0], logits)  # the summary counts


# --- the command line and the Python API ------------------------------------------------------


def test_listed_by_seq2seq_plugins(tmp_path):
    listing = seq2seq("plugins", cwd=tmp_path).stdout
    for name, cls in [("contract_gru", "ContractGRUDecoder"), ("no_repeat_beam", "NoRepeatBeamSearch")]:
        [line] = [line for line in listing.splitlines() if f" {name} " in line]
        assert cls in line and "seq2seq-contract-example" in line and "0.1.0" in line, line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fit")
    seq2seq(
        "fit", "-c", str(DATES), *TINY_MODEL,
        "--trainer.max_steps=30", "--trainer.val_check_interval=30",  # one validation, at the end
        "--data.init_args.num_train=512", "--data.init_args.batch_size=16",
        "--data.init_args.num_val=16", "--data.init_args.num_test=16",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run}",
        cwd=run,
    )
    checkpoints = sorted(run.glob("**/*.ckpt"))
    assert checkpoints, f"no checkpoint under {run}"
    last = [path for path in checkpoints if path.name == "last.ckpt"]
    return (last or checkpoints)[0]


def test_fit_then_predict_with_no_repeat_beam(checkpoint, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    output = tmp_path / "out.txt"
    seq2seq(
        "predict", "-c", str(DATES), *TINY_MODEL, "--ckpt_path", str(checkpoint),
        "--data.predict_path", str(source), "--output", str(output),
        "--model.strategy=no_repeat_beam", "--model.strategy.beam_size=3",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'predict'}",
        cwd=tmp_path,
    )
    lines = output.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(SOURCES), lines
    assert lines[SOURCES.index("")] == ""
    for line in lines[:-1]:
        assert repeated_bigrams(list(line)) == [], line  # dates are character-level: one token a character


def test_translate_with_no_repeat_beam(checkpoint):
    from seq2seq_lightning import TranslationModule

    model = TranslationModule.load_from_checkpoint(checkpoint)
    assert isinstance(model.decoder, ContractGRUDecoder)
    outputs = model.translate(SOURCES, strategy="no_repeat_beam", beam_size=3)
    assert isinstance(outputs, list) and len(outputs) == len(SOURCES)
    assert all(isinstance(output, str) for output in outputs)
    for output in outputs:
        assert repeated_bigrams(list(output)) == [], output
