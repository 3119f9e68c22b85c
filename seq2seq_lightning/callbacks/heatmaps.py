"""Attention pictures for validation examples: PNG files in the run folder, and images in W&B."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image, ImageDraw, ImageFont

from seq2seq_lightning.callbacks.attention import attention_sheet, grid_of
from seq2seq_lightning.callbacks.examples import ExampleCollector
from seq2seq_lightning.callbacks.tracking import log_images

# A perceptually ordered ramp (dark blue -> teal -> yellow) for attention weights in [0, 1].
_RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def ramp_colour(value: float) -> tuple[int, int, int]:
    """Weight in [0, 1] -> RGB on the ramp."""
    v = min(max(float(value), 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(v), len(_RAMP) - 2)
    f = v - i
    a, b = _RAMP[i], _RAMP[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))  # type: ignore[return-value]


def render_heatmap(weights: Sequence[Sequence[float]], rows: Sequence[str], cols: Sequence[str],
                   cell: int = 18, title: str = "") -> Image.Image:
    """A labelled heatmap: weights (T, S) with one row per output token and one column per input token."""
    font = ImageFont.load_default()
    left = 8 + max((int(font.getlength(r)) for r in rows), default=0)
    top = 24 + max((int(font.getlength(c)) for c in cols), default=0)
    width, height = left + cell * len(cols) + 8, top + cell * len(rows) + 8
    img = Image.new("RGB", (max(width, 120), height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 2), title[:120], fill="black", font=font)
    for j, label in enumerate(cols):  # column labels, written vertically
        text = Image.new("RGBA", (int(font.getlength(label)) + 2, 12), (255, 255, 255, 0))
        ImageDraw.Draw(text).text((0, 0), label, fill="black", font=font)
        rotated = text.rotate(90, expand=True)
        img.paste(rotated, (left + j * cell + (cell - rotated.width) // 2, top - rotated.height - 2), rotated)
    for i, label in enumerate(rows):
        draw.text((left - 4 - int(font.getlength(label)), top + i * cell + 3), label, fill="black", font=font)
        for j in range(len(cols)):
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=ramp_colour(weights[i][j]))
    return img


def attention_picture(example: dict[str, Any]) -> Any:
    """A PIL picture of a kept example's attention, or None: a heatmap (one row per output token, one
    column per source token) when the example has source token labels, the image under each word's
    attention when it has an image and the encoder's grid."""
    attention = example.get("attention")
    if attention is None:
        return None
    if example.get("source_labels"):
        cols = example["source_labels"]

        def visible(label: str) -> str:
            return {" ": "␣", "": "∅"}.get(label, label)

        weights = attention[:, : len(cols)].tolist()
        return render_heatmap(weights, [visible(x) for x in example["output_labels"]], [visible(x) for x in cols],
                              title=f"{example['source']} -> {example['hypothesis']}")
    if example.get("image") is not None:
        grid = grid_of(attention.size(1), example.get("grid"))
        if grid is None:
            return None
        words = [w.lstrip("▁") for w in example["output_labels"]]
        return attention_sheet(example["image"], words, attention, grid, example["hypothesis"])
    return None


class AttentionPlots(Callback):
    """After every validation, draws the attention of a few examples.

    The pictures (:func:`attention_picture`) are a heatmap for text, the image under each word's
    attention for captioning; the examples come from the trainer's
    :class:`~seq2seq_lightning.callbacks.examples.ExampleCollector`. Files go to
    ``<log_dir>/attention/epoch=N/<i>.png``; with a W&B logger they are logged as images too.

    Args:
        num_examples: how many validation examples to draw.
    """

    def __init__(self, num_examples: int = 3) -> None:
        self.num_examples = num_examples
        self.written: list[Path] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        ExampleCollector.of(trainer)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        examples = ExampleCollector.of(trainer).examples["val"]
        pictures: list[Any] = []
        captions: list[str] = []
        for ex in examples[: self.num_examples]:
            picture = attention_picture(ex)
            if picture is not None:
                pictures.append(picture)
                captions.append(ex["hypothesis"])
        if not pictures:
            return
        folder = Path(log_dir or trainer.default_root_dir) / "attention" / f"epoch={trainer.current_epoch}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(pictures):
            path = folder / f"{i}.png"
            picture.save(path)
            self.written.append(path)
        log_images(trainer, "val/attention", pictures, captions)
