"""Captioned images as items and batches: dataset, caption sampler, collation.

A training item is an image with one of its captions: :class:`CaptionSampler` visits every image once
per epoch and cycles through its captions from epoch to epoch. Evaluation items are images with all
their references (the first one is the loss target). An image that cannot be read is dropped from its
batch and counted (``batch.skipped``), never a crash; in predict batches it stays, with its reason
in ``batch.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from seq2seq_lightning.data.batch import ImageBatch
from seq2seq_lightning.data.caption_formats import CaptionedImage
from seq2seq_lightning.data.images import ImageLoadError, ImageTransform, load_image
from seq2seq_lightning.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class CaptionDataset(Dataset):
    """Images and their references; ``dataset[i]`` or ``dataset[(i, c)]`` (image i with caption c).

    Args:
        items: the images (path or id) and their normalised captions.
        transform: PIL image -> (3, H, W) float.
        tokenizer: the caption tokenizer; None for predict inputs (no targets).
        max_caption_len: captions are cut to this many tokens (BOS/EOS not counted).
        images: renders image ``i`` instead of reading ``items[i].image`` from disk.
        augment: apply the transform's training augmentation.
    """

    def __init__(self, items: Sequence[CaptionedImage], transform: ImageTransform, tokenizer: Tokenizer | None,
                 max_caption_len: int = 40, images: Callable[[int], Image.Image] | None = None,
                 augment: bool = False) -> None:
        self.items, self.transform, self.tokenizer = list(items), transform, tokenizer
        self.max_caption_len, self.images, self.augment = max_caption_len, images, augment
        self.failed: set[int] = set()  # unreadable images seen by this process (each is logged once)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, choice = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        example: dict[str, Any] = {"index": index, "source_text": item.image, "references": item.captions,
                                   "target_text": item.captions[choice] if item.captions else "", "target": None,
                                   "image": None, "error": None}
        try:
            if self.images is not None:
                picture = self.images(index)
            elif not item.image:
                raise ImageLoadError("no image path")
            else:
                picture = load_image(item.image, draft_size=self.transform.size)
            example["image"] = self.transform(picture, augment=self.augment)  # (3, H, W)
        except ImageLoadError as exc:
            example["error"] = str(exc)
            if index not in self.failed:
                self.failed.add(index)
                log.warning("unreadable image skipped: %s", exc)
        if self.tokenizer is not None and item.captions:
            tok = self.tokenizer
            ids = tok.encode(example["target_text"])[: self.max_caption_len]
            example["target"] = torch.tensor([tok.bos_id, *ids, tok.eos_id], dtype=torch.long)
        return example


class CaptionSampler(Sampler):
    """Keys ``(image, caption)``: each image once per epoch, its caption cycling over epochs.

    Args:
        num_captions: captions of each image.
        shuffle: a random image order per (seed, epoch).
        seed: seed of the order and of each image's first caption.
    """

    def __init__(self, num_captions: Sequence[int], shuffle: bool = True, seed: int = 0) -> None:
        self.num_captions = torch.as_tensor(list(num_captions), dtype=torch.long).clamp(min=1)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.randint(0, 1 << 30, (len(self.num_captions),), generator=generator)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.arange(len(self.num_captions))
        if self.shuffle:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        choices = (self.offsets + self.epoch) % self.num_captions
        return iter(list(zip(order.tolist(), choices[order].tolist())))

    def __len__(self) -> int:
        return len(self.num_captions)


def collate_captions(examples: Sequence[dict[str, Any]], pad_id: int, keep_errors: bool = False) -> ImageBatch:
    """Stack images and pad targets into an :class:`~seq2seq_lightning.data.batch.ImageBatch`.

    ``images`` is None when no image of the batch could be read; ``target`` (the caption each item
    encodes, padded with ``pad_id``) is None without captions; ``source_text`` holds the image paths
    or ids and ``target_text`` the captions the targets encode. Unreadable images are dropped and
    counted in ``skipped``, or, with ``keep_errors`` (predict), kept with a zero image and their
    reason in ``errors``.
    """
    skipped = 0 if keep_errors else sum(e["error"] is not None for e in examples)
    rows = list(examples) if keep_errors else [e for e in examples if e["error"] is None]
    shape = next((e["image"].shape for e in rows if e["image"] is not None), None)
    targets = [e["target"] for e in rows]
    target = target_lengths = None
    if rows and all(t is not None for t in targets):
        target = pad_sequence(targets, batch_first=True, padding_value=pad_id)  # (B, T)
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)  # (B,)
    return ImageBatch(
        images=None if shape is None else torch.stack(
            [e["image"] if e["image"] is not None else torch.zeros(shape) for e in rows]),  # (B, 3, H, W)
        target=target,
        target_lengths=target_lengths,
        index=torch.tensor([int(e["index"]) for e in rows], dtype=torch.long),  # (B,)
        source_text=[e["source_text"] for e in rows],
        references=[list(e["references"]) for e in rows],
        target_text=[e["target_text"] for e in rows],
        skipped=skipped,
        errors=[e["error"] for e in rows] if keep_errors else None,
    )

