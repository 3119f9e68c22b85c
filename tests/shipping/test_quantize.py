"""module.quantize("int8"): dynamic int8 Linear/GRU/LSTM layers, agreement with float32, every strategy,
refusals (GPU, unknown mode, training, state_dict) and `seq2seq predict --quantize int8`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import torch.ao.nn.quantized.dynamic as qd
from torch import nn

from seq2seq_lightning import CaptioningModule, TranslationModule
from seq2seq_lightning.data.shapes import ShapesDataModule
from seq2seq_lightning.modules import quantize as quantize_mod
from seq2seq_lightning.modules.quantize import QuantizedModuleError
from seq2seq_lightning.registry import STRATEGIES
from tests.test_cli import seq2seq_together

from .conftest import CONFIG, NUM

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere


@pytest.fixture(scope="module")
def pair(dates_ckpt: Path) -> tuple[TranslationModule, TranslationModule]:
    """(float32, int8) modules of the fixture checkpoint."""
    float_model = TranslationModule.load_from_checkpoint(dates_ckpt).eval()
    return float_model, TranslationModule.load_from_checkpoint(dates_ckpt).quantize("int8")


def test_layers_are_replaced(pair: tuple[TranslationModule, TranslationModule]) -> None:
    float_model, int8 = pair
    floats = {name: type(m) for name, m in float_model.named_modules() if type(m) in (nn.Linear, nn.GRU)}
    assert len(floats) == 8  # encoder GRU; decoder GRU, bridge, query, key, energy, combine, output
    quantized = dict(int8.named_modules())
    for name, float_type in floats.items():
        if name == "decoder.attention.energy":  # one output: stays float32 (MIN_LINEAR_OUTPUTS)
            assert type(quantized[name]) is nn.Linear
        else:
            assert isinstance(quantized[name], qd.Linear if float_type is nn.Linear else qd.GRU), name
    assert not any(type(m) in (nn.GRU, nn.LSTM) for m in int8.modules())
    assert int8.quantized == "int8" and int8.quantized_layers == {"GRU": 2, "Linear": 5}
    assert int8.quantize("int8") is int8  # a second call changes nothing


def test_beam4_outputs_agree_with_float32(pair: tuple[TranslationModule, TranslationModule],
                                          test_sources: list[str]) -> None:
    """Packed sequences in the encoder, GRU steps in the decoder: >= 99% of 300 beam-4 outputs unchanged."""
    float_model, int8 = pair
    assert len(test_sources) == 300
    ref = float_model.translate(test_sources, "beam", beam_size=4)
    out = int8.translate(test_sources, "beam", beam_size=4)
    agree = sum(a == b for a, b in zip(ref, out)) / len(ref)
    assert agree >= 0.99, agree


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_strategy_translates(pair: tuple[TranslationModule, TranslationModule], name: str,
                                   test_sources: list[str]) -> None:
    _, int8 = pair
    kwargs = {"sampling": {"seed": 0}, "exact": {"max_expansions": 2000}}.get(name, {})
    sources = test_sources[:6] + [""]
    outputs = int8.translate(sources, name, **kwargs)
    assert len(outputs) == len(sources) and outputs[-1] == ""
    assert all(isinstance(o, str) for o in outputs)


def test_score_and_step_log_probs(pair: tuple[TranslationModule, TranslationModule],
                                  test_sources: list[str]) -> None:
    _, int8 = pair
    greedy = int8.build_strategy("greedy")
    for source in test_sources[:4]:
        (hyp,) = int8.search(int8.make_batch([int8.source_tokenizer.encode(source)]), greedy)[0]
        (score,) = int8.score([source], [int8.target_tokenizer.decode(hyp.tokens)])
        # one teacher-forced pass against one step at a time: int8 activations are quantized with one scale
        # per call, so the two agree closely but not to float noise
        assert abs(score - hyp.log_prob) <= 0.05 + 0.02 * abs(hyp.log_prob), (score, hyp.log_prob)
    state = int8.decoder.init_state(int8.encode(int8.make_batch([int8.source_tokenizer.encode(test_sources[0])])))
    log_probs, _ = int8.decoder.step(torch.tensor([int8.target_tokenizer.bos_id]), state)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(1))


def test_captioning_module_quantizes_and_captions(tmp_path: Path) -> None:
    data = ShapesDataModule(num_train=32, num_val=4, num_test=4, image_size=64, batch_size=8, max_shapes=2)
    torch.manual_seed(0)
    model = CaptioningModule(encoder={"class_path": "cnn", "init_args": {"width_mult": 0.125, "projection_size": 32}},
                             decoder={"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 32}},
                             tokenizers=data.tokenizers, max_len=8)
    model.quantize("int8")
    assert model.quantized_layers["GRU"] == 1 and model.quantized_layers["Linear"] >= 5
    from PIL import Image

    image = Image.new("RGB", (64, 64), (200, 30, 30))
    for name in ("greedy", "beam", "sampling"):
        assert len(model.caption([image, image], name)) == 2


def test_refuses_gpu_and_unknown_mode(dates_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = TranslationModule.load_from_checkpoint(dates_ckpt)
    with pytest.raises(ValueError, match=r"unknown quantization mode 'int4'; known: int8"):
        model.quantize("int4")
    monkeypatch.setattr(quantize_mod, "on_gpu", lambda module: True)
    with pytest.raises(RuntimeError, match=r"for CPU inference.*module\.cpu\(\)\.quantize\('int8'\)"):
        model.quantize("int8")
    assert getattr(model, "quantized", None) is None
    assert type(model.decoder.output) is nn.Linear  # nothing was replaced


def test_refuses_training_and_saving(dates_ckpt: Path, tmp_path: Path) -> None:
    import lightning as L

    model = TranslationModule.load_from_checkpoint(dates_ckpt).quantize("int8")
    with pytest.raises(QuantizedModuleError, match="quantized .* for inference"):
        model.state_dict()
    from seq2seq_lightning.data.dates import DatesDataModule

    data = DatesDataModule(num_train=64, num_val=8, num_test=8, batch_size=16, tokenizers=model.hparams.tokenizers)
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(QuantizedModuleError, match="cannot be trained"):
        trainer.fit(model, datamodule=data)


def test_cli_predict_quantize_int8(seq2seq_here: Seq2SeqHere, dates_ckpt: Path, test_sources: list[str],
                                   tmp_path: Path) -> None:
    """Both predicts in real processes, started together; the refused option and the help in this one."""
    src = tmp_path / "in.txt"
    lines = test_sources[:20] + [""]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    modes = ("int8", None)
    seq2seq_together(*(["predict", "-c", str(CONFIG), *NUM, "--ckpt_path", str(dates_ckpt),
                        f"--data.init_args.predict_path={src}", "--output", str(tmp_path / f"out-{mode}.jsonl"),
                        "--model.strategy=beam", "--model.strategy.beam_size=4", "--trainer.logger=false",
                        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
                        *(["--quantize", mode] if mode else [])] for mode in modes))
    outputs = {mode: [json.loads(r)["output"] for r in (tmp_path / f"out-{mode}.jsonl").read_text(
        encoding="utf-8").splitlines()] for mode in modes}
    assert len(outputs["int8"]) == len(lines) and outputs["int8"][-1] == ""
    assert sum(a == b for a, b in zip(outputs["int8"], outputs[None])) >= len(lines) - 1
    bad = seq2seq_here("predict", "-c", str(CONFIG), "--ckpt_path", str(dates_ckpt),
                       f"--data.init_args.predict_path={src}", "--quantize", "int4", check=False)
    assert bad.returncode != 0 and "quantize" in bad.stderr and "Traceback" not in bad.stderr
    assert "--quantize" in seq2seq_here("predict", "--help").stdout
