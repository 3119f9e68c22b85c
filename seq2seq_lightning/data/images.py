"""Images in, tensors out: robust loading, the resize/normalise transform, and predict inputs.

Every image becomes 8-bit RGB whatever its file holds: grayscale, 16-bit, palette, RGBA (composited on
white), CMYK; the EXIF orientation is applied. A file that cannot be read raises
:class:`ImageLoadError` naming the file and the reason; datasets turn that into a counted skip
(training) or an error row (predict).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from seq2seq_lightning.data.text import read_lines

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


class ImageLoadError(ValueError):
    """An image that cannot be read; ``str()`` names the file and the reason."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow image; transparency is composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)  # (H, W)
        if image.mode != "F" and (image.mode.startswith("I;16") or values.max(initial=0) > 255):
            values = values / 257.0  # 16-bit range -> 8-bit
        gray = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
        return gray.convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: str | os.PathLike | BinaryIO | Image.Image, draft_size: int | None = None) -> Image.Image:
    """An RGB image from a file, a binary file object (the bytes of an image file) or a Pillow image,
    turned upright by its EXIF orientation.

    Args:
        source: a path, a binary file object or an already opened image.
        draft_size: the size the image will be resized to; lets JPEG decoding skip detail it would
            throw away (decoded at no less than twice this size).
    """
    try:
        if isinstance(source, Image.Image):
            source.load()
            image = ImageOps.exif_transpose(source)  # a copy
        else:
            with Image.open(source) as opened:
                if draft_size and opened.format == "JPEG":
                    opened.draft(None, (2 * draft_size, 2 * draft_size))
                opened.load()  # decodes the whole file: a truncated one fails here
                image = ImageOps.exif_transpose(opened)  # a copy, detached from the file
        return to_rgb(image)
    except ImageLoadError:
        raise
    except Exception as exc:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<image>"
        raise ImageLoadError(f"{name}: {type(exc).__name__}: {exc}") from exc


class ImageTransform:
    """PIL RGB image -> (3, size, size) float tensor: (augment,) resize to a square, normalise.

    The whole image is kept (it is squashed to a square, not cropped), so nothing a caption speaks of is
    cut off. Augmentation (training only) takes a random crop of 80-100% of the area and jitters
    brightness and contrast; it never flips (captions say "left" and "right").

    Args:
        size: side of the square the image is resized to.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        augment: random crops and brightness/contrast jitter.
    """

    def __init__(self, size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 augment: bool = False) -> None:
        if size < 1:
            raise ValueError(f"image size must be positive, got {size}")
        self.size, self.mean, self.std, self.augment = int(size), tuple(map(float, mean)), tuple(map(float, std)), augment
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)

    def spec(self) -> dict[str, Any]:
        """Size and normalisation as plain data (stored in checkpoints)."""
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ImageTransform:
        return cls(size=spec["size"], mean=spec["mean"], std=spec["std"])

    def load_spec(self, spec: dict[str, Any]) -> None:
        """Take another size and normalisation, in place (datasets holding this transform follow)."""
        other = ImageTransform.from_spec(spec)
        self.size, self.mean, self.std, self._mean, self._std = other.size, other.mean, other.std, other._mean, \
            other._std

    def __call__(self, image: Image.Image, augment: bool | None = None) -> Tensor:
        """image (RGB) -> (3, size, size) float; ``augment`` overrides the transform's own setting."""
        augment = self.augment if augment is None else augment
        if augment:
            image = self._random_crop(image)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensor = pixels.view(self.size, self.size, 3).permute(2, 0, 1).float().div_(255.0)  # (3, S, S)
        if augment:
            tensor = self._jitter(tensor)
        return (tensor - self._mean) / self._std

    def unnormalize(self, images: Tensor) -> Tensor:
        """(..., 3, H, W) normalised -> the same in [0, 1]."""
        return (images * self._std.to(images) + self._mean.to(images)).clamp(0.0, 1.0)

    @staticmethod
    def _random_crop(image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = float(torch.empty(1).uniform_(0.8, 1.0))
        w, h = max(1, round(width * scale**0.5)), max(1, round(height * scale**0.5))
        left = int(torch.randint(0, width - w + 1, (1,)))
        top = int(torch.randint(0, height - h + 1, (1,)))
        return image.crop((left, top, left + w, top + h))

    @staticmethod
    def _jitter(tensor: Tensor) -> Tensor:
        brightness, contrast = torch.empty(2).uniform_(0.85, 1.15).tolist()
        mean = tensor.mean()
        return ((tensor - mean) * contrast + mean).mul(brightness).clamp(0.0, 1.0)


def list_images(path: str | os.PathLike) -> list[str]:
    """Predict inputs: the image files of a folder (sorted by name) or the paths listed in a text file.

    A folder gives every regular file whose name ends in an image extension (``.jpg``, ``.png``, ...,
    any case), sorted, whatever the file holds: unreadable ones still get their row. A list file gives
    one path per line, relative paths taken from the list file's folder; an empty line is kept (its row
    is an error).
    """
    root = Path(path)
    if root.is_dir():
        files = [p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
        return [str(p) for p in sorted(files, key=lambda p: p.name)]
    if not root.is_file():
        raise FileNotFoundError(f"predict_path {os.fspath(path)} is neither a folder nor a list file")
    if root.name.lower().endswith(IMAGE_EXTENSIONS):
        return [str(root)]  # a single image
    paths = []
    for line in read_lines(root):
        line = line.strip()
        paths.append("" if not line else line if os.path.isabs(line) else str(root.parent / line))
    return paths
