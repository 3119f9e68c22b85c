"""``check_encoder``: shapes, masks, padding, batch independence of an encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.encoders.base import Encoder, EncoderOutput
from seq2seq_lightning.testing._common import IMAGE_SHAPE, PAD, TEXT_LENGTHS, _Report, _seeded, _subclass


def check_encoder(cls: type, **init_kwargs: Any) -> None:
    """Check an encoder class against the encoder contract.

    A text encoder (``cls.modality == "text"``) is built as ``cls(vocab_size=17, **init_kwargs)`` and
    reads token rows of lengths 6, 3, 1 and 4 (ids from 1, padding 0); an image encoder
    (``"image"``) is built as ``cls(**init_kwargs)`` and reads three random (3, 64, 64) images. Both
    run in eval mode. Properties: ``subclass of Encoder``, ``output_size`` (a positive int, D),
    ``output type`` (an EncoderOutput), ``shapes`` (memory (B, S, D) float, mask (B, S) bool,
    summary (B, D) float; text: S between the longest length and the input width), ``mask`` (text:
    True exactly at real positions; image: every row has a real position), ``finite outputs``,
    ``deterministic``, ``padding has no effect`` (text: other ids in the padding and wider padding
    leave every row's real positions and summary unchanged) and ``batch independence`` (a row
    encoded alone gives what it gave inside the batch).
    """
    rep = _Report("check_encoder", cls)
    _subclass(rep, cls, Encoder)
    modality = getattr(cls, "modality", "text")
    rep.require(modality in ("text", "image"), "modality", f"modality is {modality!r}, not 'text' or 'image'")
    with _seeded():
        kwargs = {"vocab_size": 17, **init_kwargs} if modality == "text" else dict(init_kwargs)
        with rep.checking("builds"):
            encoder = cls(**kwargs).eval()
        size = getattr(encoder, "output_size", None)
        rep.require(isinstance(size, int) and not isinstance(size, bool) and size > 0, "output_size",
                    f"output_size must be a positive int (D), got {size!r}")
        if modality == "text":
            _check_text_encoder(rep, encoder, kwargs["vocab_size"])
        else:
            _check_image_encoder(rep, encoder)


def _encode(rep: _Report, encoder: Encoder, prop: str, *inputs: Tensor) -> EncoderOutput:
    """Run the encoder and check the output's type, shapes and finiteness."""
    with rep.checking(prop):
        out = encoder(*inputs)
    rep.require(isinstance(out, EncoderOutput), "output type",
                f"forward returned {type(out).__name__}, not seq2seq_lightning.encoders.EncoderOutput")
    B, D = inputs[0].size(0), encoder.output_size
    m, k, s = out.memory, out.mask, out.summary
    rep.require(all(isinstance(x, Tensor) for x in (m, k, s)), "shapes", "memory, mask and summary must be tensors")
    rep.require(m.dim() == 3 and m.shape[0] == B and m.shape[2] == D and m.is_floating_point(), "shapes",
                f"memory is {tuple(m.shape)} {m.dtype}, expected (B={B}, S, D={D}) float")
    rep.require(k.shape == m.shape[:2] and k.dtype == torch.bool, "shapes",
                f"mask is {tuple(k.shape)} {k.dtype}, expected {tuple(m.shape[:2])} torch.bool")
    rep.require(s.shape == (B, D) and s.is_floating_point(), "shapes",
                f"summary is {tuple(s.shape)} {s.dtype}, expected ({B}, {D}) float")
    rep.require(bool(torch.isfinite(m).all()) and bool(torch.isfinite(s).all()), "finite outputs",
                "memory or summary holds NaN or inf (padded positions included)")
    return out


def _same_rows(rep: _Report, prop: str, what: str, ref: EncoderOutput, other: EncoderOutput,
               rows: Sequence[int], lengths: Sequence[int] | None) -> None:
    """Row rows[j] of ``ref`` equals row j of ``other`` on its real positions and summary."""
    for j, i in enumerate(rows):
        n = ref.memory.size(1) if lengths is None else lengths[i]
        rep.close(other.memory[j, :n], ref.memory[i, :n], prop, f"{what}: memory of row {i}")
        rep.close(other.summary[j], ref.summary[i], prop, f"{what}: summary of row {i}")


def _check_text_encoder(rep: _Report, encoder: Encoder, vocab_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor(TEXT_LENGTHS)
    B, S = len(TEXT_LENGTHS), max(TEXT_LENGTHS)
    real = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
    tokens = torch.randint(1, vocab_size, (B, S), generator=g).masked_fill(~real, PAD)  # (B, S)

    def mask_ok(out: EncoderOutput, width: int) -> None:
        n = out.memory.size(1)
        rep.require(S <= n <= width, "shapes",
                    f"memory has {n} positions for input width {width} and longest length {S}")
        expected = torch.arange(n)[None, :] < lengths[:, None]
        rep.require(torch.equal(out.mask.cpu(), expected), "mask",
                    f"mask {out.mask.int().tolist()} is not True exactly at the real positions of lengths "
                    f"{lengths.tolist()}")

    out = _encode(rep, encoder, "forward", tokens, lengths)
    mask_ok(out, S)
    _same_rows(rep, "deterministic", "a second forward of the same batch (dropout left on in eval mode?)", out,
               _encode(rep, encoder, "deterministic", tokens, lengths), range(B), TEXT_LENGTHS)
    wide = torch.randint(1, vocab_size, (B, S + 3), generator=g)  # other ids in the padding, 3 more columns
    wide[:, :S] = torch.where(real, tokens, wide[:, :S])
    padded = _encode(rep, encoder, "padding has no effect", wide, lengths)
    mask_ok(padded, S + 3)
    _same_rows(rep, "padding has no effect", "other ids and 3 more columns of padding", out, padded, range(B),
               TEXT_LENGTHS)
    for i in range(B):
        alone = _encode(rep, encoder, "batch independence", tokens[i : i + 1], lengths[i : i + 1])
        _same_rows(rep, "batch independence", f"row {i} encoded alone", out, alone, [i], TEXT_LENGTHS)


def _check_image_encoder(rep: _Report, encoder: Encoder) -> None:
    images = torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    out = _encode(rep, encoder, "forward", images)
    rep.require(bool(out.mask.any(1).all()), "mask", f"a row has no real position: mask {out.mask.int().tolist()}")
    _same_rows(rep, "deterministic", "a second forward of the same images (dropout left on in eval mode?)", out,
               _encode(rep, encoder, "deterministic", images), range(len(images)), None)
    for i in range(len(images)):
        alone = _encode(rep, encoder, "batch independence", images[i : i + 1])
        _same_rows(rep, "batch independence", f"image {i} encoded alone", out, alone, [i], None)
