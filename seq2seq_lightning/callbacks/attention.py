"""Attention pictures of captions: where the decoder looked for each word.

One picture per image: the caption on top, then a grid of panels, the plain image first and then one
panel per generated word (and the end of the caption): the image with that step's attention over the
encoder's grid upsampled and overlaid in red, the word as the panel's title. Drawn with Pillow only.

:func:`seq2seq_lightning.callbacks.heatmaps.attention_picture` draws them for the collected validation
examples, and the :class:`~seq2seq_lightning.callbacks.heatmaps.AttentionPlots` callback (the one
translation's heatmaps go through) saves them as ``<log_dir>/attention/epoch=N/<i>.png`` and logs them to W&B.
"""

from __future__ import annotations

import math
import textwrap

import torch
from PIL import Image, ImageDraw
from torch import Tensor

_TITLE = 14  # pixels of title text above each panel


def to_pil(image: Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB image."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    return Image.fromarray(array, "RGB")


def overlay(image: Image.Image, weights: Tensor, strength: float = 0.75) -> Image.Image:
    """The image with an (h, w) attention map upsampled to its size and shown in red (strongest = opaque)."""
    heat = (weights / weights.max().clamp(min=1e-12)).float()  # (h, w) in [0, 1]
    small = Image.fromarray((heat * 255).round().to(torch.uint8).cpu().numpy(), "L")
    mask = small.resize(image.size, Image.Resampling.BILINEAR).point(lambda v: int(v * strength))
    dimmed = Image.blend(image, Image.new("RGB", image.size, (0, 0, 0)), 0.35)
    red = Image.blend(image, Image.new("RGB", image.size, (255, 0, 0)), 0.55)
    return Image.composite(red, dimmed, mask)


def grid_of(cells: int, grid: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (h, w) of ``cells`` attention positions: ``grid`` when it fits, else a square, else None."""
    if grid is not None and grid[0] * grid[1] == cells:
        return tuple(grid)  # type: ignore[return-value]
    side = math.isqrt(cells)
    return (side, side) if side * side == cells else None


def attention_sheet(image: Image.Image, words: list[str], attention: Tensor, grid: tuple[int, int],
                    caption: str, panel: int = 96, columns: int = 6) -> Image.Image:
    """The picture for one image: ``attention`` (steps, h*w), one step per word in ``words``."""
    base = image.resize((panel, panel), Image.Resampling.BICUBIC)
    panels = [("(image)", base)] + [(w, overlay(base, a.view(*grid))) for w, a in zip(words, attention)]
    rows = math.ceil(len(panels) / columns)
    width = columns * (panel + 4) + 4
    lines = textwrap.wrap(caption, width=max(10, width // 7)) or [""]
    header = 12 * len(lines) + 8
    sheet = Image.new("RGB", (width, header + rows * (panel + _TITLE + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, line in enumerate(lines):
        draw.text((4, 3 + 12 * n), line, fill="black")
    for k, (title, picture) in enumerate(panels):
        x = 4 + (k % columns) * (panel + 4)
        y = header + (k // columns) * (panel + _TITLE + 6)
        draw.text((x, y), title[:16], fill="black")
        sheet.paste(picture, (x, y + _TITLE))
    return sheet
