"""The Transformer encoder against the encoder contract of seq2seq-lightning."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import pytest
import torch
from seq2seq_transformer import TransformerEncoder, sinusoidal_positions

from seq2seq_lightning.encoders import Encoder, EncoderOutput

PAD = 0


def make_batch(lengths: list[int], vocab_size: int = 20, width: int | None = None, seed: int = 0,
               pad_with: int | None = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token rows (B, width) padded after ``lengths``; padding is PAD or random ids."""
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    tokens = torch.randint(1, vocab_size, (len(lengths), width), generator=g)
    for i, n in enumerate(lengths):
        if pad_with is not None:
            tokens[i, n:] = pad_with
    return tokens, torch.tensor(lengths)


@pytest.fixture(params=["sinusoidal", "learned"])
def encoder(request: pytest.FixtureRequest) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(20, d_model=32, num_heads=4, num_layers=2, dim_feedforward=64,
                              positions=request.param).eval()


def test_registered_through_the_entry_point() -> None:
    from seq2seq_lightning.registry import ENCODERS

    ENCODERS.reload()
    assert ENCODERS.get("transformer") is TransformerEncoder
    entry = next(e for e in ENCODERS.entries() if e.name == "transformer")
    assert entry.dist == "seq2seq-transformer"
    built = ENCODERS.build("transformer", vocab_size=11, d_model=16, num_heads=2)
    assert isinstance(built, Encoder) and built.output_size == 16


def test_shapes_mask_and_summary(encoder: TransformerEncoder) -> None:
    tokens, lengths = make_batch([5, 3, 7, 1])
    out = encoder(tokens, lengths)
    assert isinstance(out, EncoderOutput)
    assert out.memory.shape == (4, 7, 32) and out.summary.shape == (4, 32)
    assert out.mask.dtype == torch.bool and out.mask.shape == (4, 7)
    assert out.mask.sum(1).tolist() == [5, 3, 7, 1]
    assert encoder.output_size == 32
    assert torch.all(out.memory[~out.mask] == 0)
    for i, n in enumerate([5, 3, 7, 1]):
        torch.testing.assert_close(out.summary[i], out.memory[i, :n].mean(0))


def test_padding_never_changes_a_row(encoder: TransformerEncoder) -> None:
    lengths = [6, 2, 9, 4]
    tokens, lens = make_batch(lengths, width=13, pad_with=None)  # random ids in the padding
    batched = encoder(tokens, lens)
    for i, n in enumerate(lengths):
        alone = encoder(tokens[i : i + 1, :n], lens[i : i + 1])
        torch.testing.assert_close(batched.memory[i, :n], alone.memory[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.summary[i], alone.summary[0], atol=1e-5, rtol=1e-5)
    # Other values in the padding give the same result.
    repadded = tokens.clone()
    repadded[~batched.mask] = PAD
    torch.testing.assert_close(encoder(repadded, lens).memory, batched.memory, atol=1e-5, rtol=1e-5)


def test_positions_matter(encoder: TransformerEncoder) -> None:
    tokens = torch.tensor([[3, 4, 5, 6]])
    lengths = torch.tensor([4])
    forward = encoder(tokens, lengths).memory[0]
    backward = encoder(tokens.flip(1), lengths).memory[0].flip(0)
    assert not torch.allclose(forward, backward, atol=1e-4)


def test_empty_row_and_gradients() -> None:
    torch.manual_seed(1)
    enc = TransformerEncoder(15, d_model=16, num_heads=2, num_layers=1, dim_feedforward=32).train()
    tokens, lengths = make_batch([4, 0, 2], vocab_size=15)
    out = enc(tokens, lengths)
    assert torch.isfinite(out.memory).all() and torch.isfinite(out.summary).all()
    assert torch.all(out.summary[1] == 0) and not out.mask[1].any()
    (out.memory.square().mean() + out.summary.square().mean()).backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.all(enc.embedding.weight.grad[PAD] == 0)


def test_sinusoidal_table() -> None:
    table = sinusoidal_positions(50, 7)
    assert table.shape == (50, 7)
    assert torch.all(table[0, 0::2] == 0) and torch.all(table[0, 1::2] == 1)
    assert table.abs().max() <= 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="divide"):
        TransformerEncoder(10, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="positions"):
        TransformerEncoder(10, positions="rotary")  # type: ignore[arg-type]
    enc = TransformerEncoder(10, d_model=16, num_heads=2, max_positions=8)
    tokens, lengths = make_batch([9], vocab_size=10)
    with pytest.raises(ValueError, match="max_positions"):
        enc(tokens, lengths)


def test_every_argument_is_documented() -> None:
    doc = inspect.getdoc(TransformerEncoder) or ""
    args_section = doc.split("Args:", 1)[1]
    documented = set(re.findall(r"^\s{4}(\w+):", args_section, flags=re.MULTILINE))
    params = set(inspect.signature(TransformerEncoder.__init__).parameters) - {"self"}
    assert params == documented


def test_cli_resolves_the_registry_name() -> None:
    """``--model.encoder=transformer`` works on the command line, options included."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "seq2seq_lightning.cli", "fit", "--model=seq2seq_lightning.TranslationModule",
         "--data=seq2seq_lightning.data.dates.DatesDataModule", "--model.encoder=transformer",
         "--model.encoder.d_model=64", "--model.encoder.positions=learned", "--print_config"],
        check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"class_path: seq2seq_transformer\.(encoder\.)?TransformerEncoder", proc.stdout)
    assert "d_model: 64" in proc.stdout and "positions: learned" in proc.stdout
