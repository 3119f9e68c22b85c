"""The captioning LightningDataModule: COCO, Karpathy and Flickr8k annotations; images to predict on.

Items, the training sampler and batches are in :mod:`seq2seq_lightning.data.caption_batches`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from PIL import Image
from torch.utils.data import DataLoader

from seq2seq_lightning.data.base import Seq2SeqDataModule
from seq2seq_lightning.data.caption_batches import (
    CaptionDataset,
    CaptionSampler,
    collate_captions,
)
from seq2seq_lightning.data.caption_formats import CaptionedImage, read_captions
from seq2seq_lightning.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, list_images
from seq2seq_lightning.data.pairs import ImagePairStream, PairLoader, warn_errors
from seq2seq_lightning.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)
__all__ = ["CaptionDataset", "CaptionSampler", "CaptioningDataModule", "collate_captions"]


class CaptioningDataModule(Seq2SeqDataModule):
    """Captioned images from COCO, Karpathy-split or Flickr8k annotations; predict on image files.

    Batches are :class:`~seq2seq_lightning.data.batch.ImageBatch` (see :func:`collate_captions`):
    ``images`` (B, 3, H, W), ``target`` (B, T) padded ``[BOS ... EOS]``, ``target_lengths``, ``index``,
    ``source_text`` (image path), ``references`` (all captions) and ``target_text``.

    Args:
        train_path: training annotations: a COCO ``captions_*.json``, a Karpathy ``dataset_*.json`` or a
            Flickr8k ``Flickr8k.token.txt``. Its own val/test splits (Karpathy; Flickr8k with its split
            lists next to it) serve when val_path/test_path are not given. New tokenizers are trained on
            its captions.
        val_path: validation annotations (a whole file is the split); None: the train file's val split,
            if it has one, else fitting skips validation.
        test_path: test annotations, like val_path.
        predict_path: images to caption: a folder (its image files, sorted by name) or a text file with
            one image path per line (relative to the file's folder). For ``seq2seq score``: the pairs to
            score, ``image_path<TAB>caption`` lines or JSON lines with "image" and "caption".
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
        super().__init__(
            paths={"train": train_path, "val": val_path, "test": test_path, "predict": predict_path},
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            tokenizers=tokenizers,
        )
        self.image_root, self.format, self.lowercase = image_root, format, lowercase
        self.image_transform = ImageTransform(image_size, mean, std)
        self.augment = augment
        self.tokenizer_kind, self.vocab_size, self.min_frequency = tokenizer, vocab_size, min_frequency
        self.max_caption_len = max_caption_len
        self._files: dict[str, dict[str, list[CaptionedImage]]] = {}
        self.scoring = False  # predict_path holds pairs to score (set by `seq2seq score`, data.pairs.reading_pairs)

    # ------------------------------------------------------------------ reading
    def _read_file(self, path: str) -> dict[str, list[CaptionedImage]]:
        if path not in self._files:
            self._files[path] = read_captions(path, self.format, self.image_root, self.lowercase)
        return self._files[path]

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has data: its own path, or (val, test) its part of the train file."""
        if self.paths[split] is not None:
            return True
        train = self.paths["train"]
        return split in ("val", "test") and train is not None and split in self._read_file(train)

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
    def train_tokenizers(self) -> dict[str, str]:
        """``{"target": json}`` trained on the training captions."""
        captions = [c for item in self.load_split("train") for c in item.captions]
        tokenizer = Tokenizer.train(captions, kind=self.tokenizer_kind, vocab_size=self.vocab_size,
                                    min_frequency=self.min_frequency)
        log.info("trained a %s caption tokenizer (%d tokens) on %d captions", self.tokenizer_kind,
                 tokenizer.vocab_size, len(captions))
        return {"target": tokenizer.to_json()}

    # ------------------------------------------------------------------ datasets
    def build_dataset(self, split: str) -> CaptionDataset | ImagePairStream:
        """Captioned images of ``split``; for "predict", the images of predict_path without captions
        (while ``scoring``, a stream of the (image, caption) pairs to score: :mod:`seq2seq_lightning.data.pairs`)."""
        if split == "predict" and self.scoring:
            if self.paths["predict"] is None:
                raise ValueError("no predict_path was given (the pairs to score)")
            return ImagePairStream(self.paths["predict"], self.target_tokenizer, self.image_transform,
                                   self.eval_batch_size, image_root=self.image_root, lowercase=self.lowercase)
        if split == "predict":
            if self.paths["predict"] is None:
                raise ValueError("no predict_path was given")
            items = [CaptionedImage(p) for p in list_images(self.paths["predict"])]
            return CaptionDataset(items, self.image_transform, None)
        return CaptionDataset(self.load_split(split), self.image_transform, self.target_tokenizer,
                              self.max_caption_len, self.image_source(split), self.augment and split == "train")

    def collate_fn(self, split: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """:func:`collate_captions`; predict batches keep unreadable images (with their errors)."""
        predict = split == "predict"  # predict items have no captions (and need no tokenizer)
        return partial(collate_captions, pad_id=0 if predict else self.target_tokenizer.pad_id, keep_errors=predict)

    def predict_dataloader(self) -> DataLoader:
        """Images to caption; while ``scoring``, the streamed pairs (each process its share under DDP)."""
        dataset = self.dataset("predict")
        if not isinstance(dataset, ImagePairStream):
            return super().predict_dataloader()
        if self.trainer is not None:
            dataset.rank, dataset.world_size = self.trainer.global_rank, self.trainer.world_size
        return PairLoader(dataset, num_workers=self.num_workers,
                          on_errors=lambda malformed, errors, rows: warn_errors(dataset.path, malformed, errors, rows))

    def batching(self, split: str, dataset: CaptionDataset) -> dict[str, Any]:
        """Training: every image once per epoch, with one of its captions (cycling); else in order.

        Validation and test take the base's batching (in order, and under DDP every image on exactly
        one process, so that BLEU and CIDEr's document frequencies count each image once)."""
        if split in ("val", "test"):
            return super().batching(split, dataset)
        if split != "train":
            return {"batch_size": self.eval_batch_size}
        sampler = CaptionSampler([len(i.captions) for i in dataset.items], shuffle=True, seed=self.seed)
        return {"sampler": sampler, "batch_size": self.batch_size}

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"image_transform": self.image_transform.spec(), **super().state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint's state: its image size and normalisation win (the network was trained on them);
        its tokenizer must be the one in use."""
        transform = state_dict.get("image_transform")
        if transform is not None and transform != self.image_transform.spec():
            log.warning("preparing images as the checkpoint was trained (%s), not as configured (%s)", transform,
                        self.image_transform.spec())
            self.image_transform.load_spec(transform)
        super().load_state_dict(state_dict)
