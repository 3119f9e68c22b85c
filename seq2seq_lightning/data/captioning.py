"""The captioning LightningDataModule: COCO, Karpathy and Flickr8k annotations; images to predict on.

Items, the training sampler and batches are in :mod:`seq2seq_lightning.data.caption_batches`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import lightning as L
from PIL import Image
from torch.utils.data import DataLoader

from seq2seq_lightning.data.caption_batches import (
    CaptionDataset,
    CaptionSampler,
    batch_rows,
    collate_captions,
)
from seq2seq_lightning.data.caption_formats import CaptionedImage, read_captions
from seq2seq_lightning.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, list_images
from seq2seq_lightning.data.loader import ResumableDataLoader
from seq2seq_lightning.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)
__all__ = ["CaptionDataset", "CaptionSampler", "CaptioningDataModule", "batch_rows", "collate_captions"]

_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


class CaptioningDataModule(L.LightningDataModule):
    """Captioned images from COCO, Karpathy-split or Flickr8k annotations; predict on image files.

    Batches are dicts (see :func:`collate_captions`): ``images`` (B, 3, H, W), ``target`` (B, T) padded
    ``[BOS ... EOS]``, ``target_lengths``, ``index``, ``source_text`` (image path), ``references`` (all
    captions) and ``target_text``.

    Args:
        train_path: training annotations: a COCO ``captions_*.json``, a Karpathy ``dataset_*.json`` or a
            Flickr8k ``Flickr8k.token.txt``. Its own val/test splits (Karpathy; Flickr8k with its split
            lists next to it) serve when val_path/test_path are not given. New tokenizers are trained on
            its captions.
        val_path: validation annotations (a whole file is the split); None: the train file's val split,
            if it has one, else fitting skips validation.
        test_path: test annotations, like val_path.
        predict_path: images to caption: a folder (its image files, sorted by name) or a text file with
            one image path per line (relative to the file's folder).
        image_root: the folder image paths are relative to; None looks next to the annotation file
            (``images/``, ``train2017/``, ``Flicker8k_Dataset/``...).
        format: annotation format, ``auto`` (detected from the content), ``coco``, ``karpathy`` or ``flickr8k``.
        image_size: images are resized to this square size.
        mean: per-channel normalisation mean (ImageNet's, as pretrained backbones expect).
        std: per-channel normalisation standard deviation.
        augment: random crops and brightness/contrast jitter of training images.
        tokenizer: caption tokenizer kind, ``word`` or ``bpe``.
        vocab_size: largest vocabulary, special tokens included.
        min_frequency: rarer words (word) or merges (bpe) are left out of the vocabulary.
        lowercase: lowercase captions (references too).
        max_caption_len: captions are cut to this many tokens.
        batch_size: images per training batch.
        eval_batch_size: images per validation/test/predict batch; None means batch_size.
        num_workers: DataLoader worker processes.
        seed: seed of the training order and caption choice.
        tokenizers: a serialized caption tokenizer ({"target": json}) to use instead of training one;
            filled from a checkpoint when resuming, testing or predicting.
    """

    def __init__(
        self,
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        image_root: str | None = None,
        format: Literal["auto", "coco", "karpathy", "flickr8k"] = "auto",
        image_size: int = 224,
        mean: list[float] = list(IMAGENET_MEAN),  # noqa: B006 (read-only; shown by --help)
        std: list[float] = list(IMAGENET_STD),  # noqa: B006
        augment: bool = False,
        tokenizer: Literal["word", "bpe"] = "word",
        vocab_size: int = 10000,
        min_frequency: int = 1,
        lowercase: bool = True,
        max_caption_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        tokenizers: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if tokenizers is not None and set(tokenizers) != {"target"}:
            raise ValueError(f"tokenizers must have the single key 'target', got {sorted(tokenizers)}")
        self.paths = {"train": train_path, "val": val_path, "test": test_path, "predict": predict_path}
        self.image_root, self.format, self.lowercase = image_root, format, lowercase
        self.image_transform = ImageTransform(image_size, mean, std)
        self.augment = augment
        self.tokenizer_kind, self.vocab_size, self.min_frequency = tokenizer, vocab_size, min_frequency
        self.max_caption_len = max_caption_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers, self.seed = num_workers, seed
        self._tokenizer_json = dict(tokenizers) if tokenizers is not None else None
        self._tokenizer: Tokenizer | None = None
        self._files: dict[str, dict[str, list[CaptionedImage]]] = {}
        self.datasets: dict[str, CaptionDataset] = {}

    # ------------------------------------------------------------------ reading
    def _read_file(self, path: str) -> dict[str, list[CaptionedImage]]:
        if path not in self._files:
            self._files[path] = read_captions(path, self.format, self.image_root, self.lowercase)
        return self._files[path]

    def has_split(self, split: str) -> bool:
        """Whether ``split`` ("train", "val", "test") has data."""
        if self.paths[split] is not None:
            return True
        return self.paths["train"] is not None and split in self._read_file(self.paths["train"])

    def load_split(self, split: str) -> list[CaptionedImage]:
        """The images of ``split``: its own file (all of it, or its part of that name) or the train file's part."""
        path = self.paths[split] or self.paths["train"]
        if path is None:
            raise ValueError(f"no {split}_path was given")
        parts = self._read_file(path)
        if split in parts:
            return parts[split]
        if self.paths[split] is not None and "all" in parts:
            return parts["all"]
        raise ValueError(f"{path} has no {split} split (it holds {', '.join(parts)}); give {split}_path")

    def image_source(self, split: str) -> Callable[[int], Image.Image] | None:
        """Renders image i of a generated split; None reads files."""
        return None

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizers(self) -> dict[str, str]:
        """``{"target": json}``; trained on the training captions on first access if not given."""
        if self._tokenizer_json is None:
            if not self.has_split("train"):
                raise ValueError("no tokenizers were given and there is no train_path to train them on")
            captions = [c for item in self.load_split("train") for c in item.captions]
            tokenizer = Tokenizer.train(captions, kind=self.tokenizer_kind, vocab_size=self.vocab_size,
                                        min_frequency=self.min_frequency)
            log.info("trained a %s caption tokenizer (%d tokens) on %d captions", self.tokenizer_kind,
                     tokenizer.vocab_size, len(captions))
            self._tokenizer_json = {"target": tokenizer.to_json()}
        return dict(self._tokenizer_json)

    @property
    def target_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_json(self.tokenizers["target"])
        return self._tokenizer

    # ------------------------------------------------------------------ datasets
    def setup(self, stage: str | None = None) -> None:
        splits = _STAGE_SPLITS.get(stage or "fit")
        if splits is None:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(_STAGE_SPLITS)}")
        for split in splits:
            if split in self.datasets:
                continue
            if split == "predict":
                if self.paths["predict"] is None:
                    raise ValueError("no predict_path was given")
                items = [CaptionedImage(p) for p in list_images(self.paths["predict"])]
                self.datasets[split] = CaptionDataset(items, self.image_transform, None)
            elif split != "val" or self.has_split("val"):
                self.datasets[split] = CaptionDataset(self.load_split(split), self.image_transform,
                                                      self.target_tokenizer, self.max_caption_len,
                                                      self.image_source(split), self.augment and split == "train")

    def dataset(self, split: str) -> CaptionDataset:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split])
        if split not in self.datasets:
            raise ValueError(f"there is no {split} data")
        return self.datasets[split]

    def _loader(self, dataset: CaptionDataset, keep_errors: bool = False, **kwargs: Any) -> DataLoader:
        collate = partial(collate_captions, pad_id=self.target_tokenizer.pad_id if dataset.tokenizer else 0,
                          keep_errors=keep_errors)
        return ResumableDataLoader(dataset, seed=self.seed, collate_fn=collate, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        sampler = CaptionSampler([len(i.captions) for i in dataset.items], shuffle=True, seed=self.seed)
        if self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
        return self._loader(dataset, sampler=sampler, batch_size=self.batch_size, consumed=self._consumed_batches)

    def _consumed_batches(self) -> int | None:
        """Batches of the current epoch the attached trainer's loop has consumed (resuming skips them)."""
        if self.trainer is None:
            return None
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.datasets and not self.has_split("val"):
            return []
        return self._loader(self.dataset("val"), batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("predict"), keep_errors=True, batch_size=self.eval_batch_size)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"image_transform": self.image_transform.spec()}
        if self._tokenizer_json is not None:
            state["tokenizers"] = dict(self._tokenizer_json)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint's state: its image size and normalisation win (the network was trained on them);
        its tokenizer must be the one in use."""
        transform = state_dict.get("image_transform")
        if transform is not None and transform != self.image_transform.spec():
            log.warning("preparing images as the checkpoint was trained (%s), not as configured (%s)", transform,
                        self.image_transform.spec())
            self.image_transform.load_spec(transform)
        saved = state_dict.get("tokenizers")
        if saved is None:
            return
        if self._tokenizer_json is None:
            self._tokenizer_json = dict(saved)
        elif dict(saved) != self._tokenizer_json:
            raise ValueError("the checkpoint's caption tokenizer differs from the one this data module uses; "
                             "pass the checkpoint's tokenizers (data.tokenizers) instead of training a new one")
