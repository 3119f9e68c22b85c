"""ONNX export and OnnxTranslator: the masked encoder path, the graphs, and search in ONNX Runtime
against PyTorch with every registered strategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.encoders.rnn import RNNEncoder
from seq2seq_lightning.export import OnnxTranslator, export_onnx
from seq2seq_lightning.export.onnx_deps import require
from seq2seq_lightning.export.onnx_graphs import check_exportable
from seq2seq_lightning.registry import STRATEGIES

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere

ROOT = Path(__file__).resolve().parents[2]
GRU = {"encoder": {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}},
       "decoder": {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}}
LSTM_FEED = {"encoder": {"class_path": "rnn", "init_args": {"embedding_size": 8, "hidden_size": 10, "cell": "lstm",
                                                            "num_layers": 2, "dropout": 0.3}},
             "decoder": {"class_path": "rnn", "init_args": {"embedding_size": 8, "hidden_size": 12, "cell": "lstm",
                                                            "num_layers": 2, "input_feeding": True, "dropout": 0.3}}}
GRU_PLAIN = {"encoder": {"class_path": "rnn", "init_args": {"embedding_size": 8, "hidden_size": 10,
                                                            "bidirectional": False}},
             "decoder": {"class_path": "rnn", "init_args": {"embedding_size": 8, "hidden_size": 12,
                                                            "attention": False}}}


def agreement(a: list[str], b: list[str]) -> float:
    assert len(a) == len(b)
    return sum(x == y for x, y in zip(a, b)) / len(a)


@pytest.fixture(scope="module")
def data() -> DatesDataModule:
    dm = DatesDataModule(num_train=1024, num_val=16, num_test=100, batch_size=32)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def sentences(data: DatesDataModule) -> list[str]:
    return [ex.source for ex in data.examples("test")]


@pytest.fixture(scope="module")
def trained(data: DatesDataModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GRU dates model (bidirectional encoder, attention) trained for 3 epochs; its checkpoint."""
    torch.manual_seed(0)
    model = TranslationModule(tokenizers=data.tokenizers, **GRU)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = tmp_path_factory.mktemp("ckpt") / "dates.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def model(trained: Path) -> TranslationModule:
    return TranslationModule.load_from_checkpoint(trained, map_location="cpu").eval()


@pytest.fixture(scope="module")
def exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`seq2seq export` of the trained checkpoint, run as a user would."""
    out = tmp_path_factory.mktemp("onnx") / "dates"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", "export", "--ckpt_path", str(trained),
                           "--output", str(out)], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def onnx(exported: Path) -> OnnxTranslator:
    return OnnxTranslator(exported)


# -- the masked encoder path ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_masked_path_equals_packed(cell: str, bidirectional: bool, num_layers: int) -> None:
    torch.manual_seed(0)
    enc = RNNEncoder(30, embedding_size=8, hidden_size=6, num_layers=num_layers, cell=cell,
                     bidirectional=bidirectional).eval()
    for lengths in ([9, 3, 1, 7, 5], [4], [2, 2], [6, 0, 11]):
        lengths_t = torch.tensor(lengths)
        tokens = torch.randint(4, 30, (len(lengths), max(lengths) + 2))  # garbage past every length
        packed, masked = enc(tokens, lengths_t), enc.forward_masked(tokens, lengths_t)
        width = packed.memory.size(1)
        torch.testing.assert_close(masked.memory[:, :width], packed.memory, atol=1e-5, rtol=1e-5)
        assert torch.all(masked.memory[:, width:] == 0)
        torch.testing.assert_close(masked.summary, packed.summary, atol=1e-5, rtol=1e-5)
        assert torch.equal(masked.mask[:, :width], packed.mask) and not masked.mask[:, width:].any()
        # every layer's and direction's final state, as nn.GRU / nn.LSTM give h_n over packed input
        embedded = enc.embedding(tokens)
        pack = pack_padded_sequence(embedded, lengths_t.clamp(min=1), batch_first=True, enforce_sorted=False)
        out, final = enc.rnn(pack)
        h_n = final[0] if cell == "lstm" else final
        outputs, hidden = enc.run_masked(embedded, lengths_t)
        torch.testing.assert_close(hidden, h_n, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(outputs[:, :width], pad_packed_sequence(out, batch_first=True)[0],
                                   atol=1e-5, rtol=1e-5)


def test_packed_path_is_unchanged_by_the_masked_one() -> None:
    """forward() still packs: padding garbage never reaches a row, and the memory is cut to max(lengths)."""
    torch.manual_seed(2)
    enc = RNNEncoder(30, embedding_size=8, hidden_size=6).eval()
    tokens = torch.randint(4, 30, (2, 8))
    out = enc(tokens, torch.tensor([5, 3]))
    assert out.memory.shape == (2, 5, 12)
    assert torch.all(out.memory[1, 3:] == 0)


# -- export --------------------------------------------------------------------------------------------

def test_export_writes_graphs_tokenizers_and_manifest(exported: Path, model: TranslationModule) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {"encoder.onnx", "decoder_step.onnx", "manifest.json", "source_tokenizer.json",
            "target_tokenizer.json"} <= names
    manifest = json.loads((exported / "manifest.json").read_text())
    assert [t["name"] for t in manifest["state"]] == ["hidden", "memory", "keys", "mask"]
    assert manifest["step_outputs"] == ["log_probs", "new_hidden", "attention"]
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert (manifest["max_len_a"], manifest["max_len_b"]) == (model.max_len_a, model.max_len_b)
    assert manifest["strategy"]["class_path"].endswith("GreedySearch")
    assert manifest["vocab_size"] == model.target_tokenizer.vocab_size
    assert (exported / "source_tokenizer.json").read_text() == model.source_tokenizer.to_json()
    import onnx

    for name in ("encoder.onnx", "decoder_step.onnx"):
        onnx.checker.check_model(str(exported / name))


def test_encoder_graph_runs_at_two_lengths_and_batch_sizes(onnx: OnnxTranslator, model: TranslationModule) -> None:
    """One export, a bidirectional GRU: its source axis stays dynamic (and equals the packed encoder)."""
    for batch, width in ((2, 5), (6, 13)):
        generator = torch.Generator().manual_seed(width)
        lengths = torch.randint(1, width + 1, (batch,), generator=generator)
        lengths[0] = width
        tokens = torch.randint(4, model.source_tokenizer.vocab_size, (batch, width), generator=generator)
        tokens[torch.arange(width)[None, :] >= lengths[:, None]] = 0
        got = onnx.encoder(tokens, lengths)
        with torch.no_grad():
            want = model.decoder.init_state(model.encoder(tokens, lengths))
        assert got["memory"].shape == (batch, width, model.encoder.output_size)
        for name in ("hidden", "memory", "keys"):
            torch.testing.assert_close(got[name], getattr(want, name), atol=1e-5, rtol=1e-4)
        assert torch.equal(got["mask"], want.mask)


def step_log_probs_match(onnx: OnnxTranslator, model: TranslationModule, sentences: list[str], steps: int = 4) -> None:
    """A few steps from the same source in ONNX Runtime and PyTorch: log-probs, attention, state to ~1e-4."""
    tokens, lengths = onnx.make_batch(onnx.source_tokenizer.encode_batch(sentences))
    state = onnx.encoder(tokens, lengths)
    with torch.no_grad():
        ref = model.decoder.init_state(model.encoder(tokens, lengths))
    generator = torch.Generator().manual_seed(0)
    last = torch.full((len(sentences),), onnx.target_tokenizer.bos_id)
    for _ in range(steps):
        logp, state = onnx.decoder.step(last, state)
        with torch.no_grad():
            ref_logp, ref = model.decoder.step(last, ref)
        assert logp.dtype == torch.float32 and logp.shape == ref_logp.shape
        torch.testing.assert_close(logp, ref_logp, atol=1e-4, rtol=1e-4)
        if model.decoder.attention is not None:
            torch.testing.assert_close(onnx.decoder.last_attention, model.decoder.last_attention, atol=1e-5, rtol=1e-4)
        for name in ("hidden", "cell", "feed"):
            if getattr(ref, name) is not None:
                torch.testing.assert_close(state[name], getattr(ref, name), atol=1e-5, rtol=1e-4)
        last = torch.randint(4, onnx.decoder.vocab_size, (len(sentences),), generator=generator)


def test_one_step_log_probs_equal_pytorch(onnx: OnnxTranslator, model: TranslationModule,
                                          sentences: list[str]) -> None:
    step_log_probs_match(onnx, model, sentences[:7])


@pytest.mark.parametrize("arch", [LSTM_FEED, GRU_PLAIN], ids=["lstm-2layers-input-feeding", "gru-no-attention"])
def test_other_architectures_export_and_match(arch: dict, data: DatesDataModule, sentences: list[str],
                                              tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = TranslationModule(tokenizers=data.tokenizers, max_len_b=5, **arch)  # in training mode, as built
    manifest = json.loads(export_onnx(module, tmp_path).read_text())  # verifies in eval mode (dropout off)
    assert module.training  # left as it was
    module.eval()
    layout = [t["name"] for t in manifest["state"]]
    if arch is LSTM_FEED:
        assert layout == ["hidden", "cell", "memory", "keys", "mask", "feed"]
        assert manifest["step_outputs"] == ["log_probs", "new_hidden", "new_cell", "new_feed", "attention"]
    else:
        assert layout == ["hidden", "memory", "mask"] and manifest["step_outputs"] == ["log_probs", "new_hidden"]
    onnx = OnnxTranslator(tmp_path)
    step_log_probs_match(onnx, module, sentences[:5])
    assert agreement(onnx.translate(sentences[:20]), module.translate(sentences[:20])) >= 0.95


# -- search in ONNX Runtime ----------------------------------------------------------------------------

@pytest.mark.parametrize("strategy,kwargs", [("greedy", {}), ("beam", {"beam_size": 4})])
def test_translations_equal_pytorch(onnx: OnnxTranslator, model: TranslationModule, sentences: list[str],
                                    strategy: str, kwargs: dict) -> None:
    got, want = onnx.translate(sentences, strategy, **kwargs), model.translate(sentences, strategy, **kwargs)
    share = agreement(got, want)
    print(f"\n{strategy} {kwargs}: {share:.1%} of {len(sentences)} identical")
    assert share >= 0.99, [(s, a, b) for s, a, b in zip(sentences, got, want) if a != b]


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_registered_strategy_runs_and_matches(name: str, onnx: OnnxTranslator, model: TranslationModule,
                                                    sentences: list[str]) -> None:
    few = sentences[:16]
    kwargs = {"seed": 0} if name == "sampling" else {}
    if name == "exact":
        kwargs = {"max_expansions": 2000}
    got, want = onnx.translate(few, name, **kwargs), model.translate(few, name, **kwargs)
    assert agreement(got, want) >= (0.9 if name == "sampling" else 15 / 16), (got, want)
    if name == "sampling":  # seeded: the same draws again
        assert onnx.translate(few, name, **kwargs) == got


def test_hypotheses_log_probs_equal_pytorch(onnx: OnnxTranslator, model: TranslationModule,
                                            sentences: list[str]) -> None:
    few = sentences[:10]
    tokens, lengths = onnx.make_batch(onnx.source_tokenizer.encode_batch(few))
    got = onnx.search(tokens, lengths, onnx.build_strategy("beam", beam_size=3, n_best=2))
    from seq2seq_lightning.data.batch import TextBatch

    batch = TextBatch(source=tokens, source_lengths=lengths, index=torch.arange(len(few)))
    want = model.search(batch, model.build_strategy("beam", beam_size=3, n_best=2))
    for g, w in zip(got, want):
        assert [h.tokens for h in g] == [h.tokens for h in w]
        for a, b in zip(g, w):
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
            torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=1e-4)


def test_constraints_and_prefixes(onnx: OnnxTranslator, model: TranslationModule, sentences: list[str]) -> None:
    few = sentences[:8]
    constraints = [["-0"], None, ["19"], [], ["-1", "2"], None, ["0"], ["3"]]
    got = onnx.translate(few, "constrained_beam", constraints=constraints, beam_size=4)
    assert got == model.translate(few, "constrained_beam", constraints=constraints, beam_size=4)
    for out, phrases in zip(got, constraints):
        assert all(p in out for p in phrases or [])
    prefixes = ["19", None, "2", "", "20", "1", None, "199"]
    got = onnx.translate(few, "beam", prefixes=prefixes, beam_size=2)
    assert got == model.translate(few, "beam", prefixes=prefixes, beam_size=2)
    assert all(out.startswith(p or "") for out, p in zip(got, prefixes))
    with pytest.raises(ValueError, match="constrained_beam"):
        onnx.translate(few[:1], "greedy", constraints=[["1"]])


def test_translate_keeps_order_empty_lines_and_configured_strategy(onnx: OnnxTranslator, sentences: list[str]) -> None:
    lines = [sentences[0], "", "   ", sentences[1]]
    out = onnx.translate(lines)
    assert out[1] == out[2] == "" and out[0] == onnx.translate([sentences[0]])[0]
    assert onnx.translate(lines, "beam", beam_size=1) == out  # beam 1 is greedy
    with pytest.raises(ValueError, match="takes no beam_size"):
        onnx.translate(lines, beam_size=2)  # the configured strategy is greedy


# -- refusals and the optional extra ------------------------------------------------------------------

def test_unsupported_models_are_refused(data: DatesDataModule) -> None:
    class Stub:
        def __init__(self, encoder, decoder=None):
            self.encoder, self.decoder, self.source_tokenizer = encoder, decoder, None

    module = TranslationModule(tokenizers=data.tokenizers, **GRU_PLAIN)
    with pytest.raises(ValueError, match="built-in 'rnn' encoder"):
        check_exportable(Stub(torch.nn.Linear(2, 2), module.decoder))
    with pytest.raises(ValueError, match="built-in 'rnn' decoder"):
        check_exportable(Stub(module.encoder, torch.nn.Linear(2, 2)))
    from seq2seq_lightning.encoders.cnn import CNNEncoder

    with pytest.raises(ValueError, match="translation models only"):
        check_exportable(type("Captioner", (), {"encoder": CNNEncoder(width_mult=0.25), "decoder": module.decoder})())


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name == "onnxruntime"
                        else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'seq2seq-lightning\[export\]'"):
        require("onnxruntime", "OnnxTranslator")


def test_importing_the_package_needs_no_onnx() -> None:
    code = ("import sys, seq2seq_lightning, seq2seq_lightning.export\n"
            "from seq2seq_lightning.export import OnnxTranslator, export_onnx\n"
            "import seq2seq_lightning.export.onnx_export\n"
            "bad = [m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_export_help_and_errors(seq2seq_here: Seq2SeqHere, trained: Path, tmp_path: Path) -> None:
    """`seq2seq export` in this process: help and refusals before anything is exported (the ``exported``
    fixture runs it in a real one)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return seq2seq_here("export", *args, check=False)

    help_text = run("--help").stdout
    for option in ("--ckpt_path", "--output", "--opset", "--no-verify", "OnnxTranslator"):
        assert option in help_text
    missing = run("--ckpt_path", str(tmp_path / "none.ckpt"), "--output", str(tmp_path / "out"))
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr
    old = run("--ckpt_path", str(trained), "--output", str(tmp_path / "out"), "--opset", "9")
    assert old.returncode == 2 and "opset 9 is too old" in old.stderr and "Traceback" not in old.stderr
