"""CaptioningModule: an image encoder, the conditional LM decoder and a search strategy."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import ParallelStrategy
from PIL import Image
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.text import BLEUScore

from seq2seq_lightning.analysis.scoring import score_texts
from seq2seq_lightning.data.batch import ImageBatch
from seq2seq_lightning.data.images import ImageTransform, load_image
from seq2seq_lightning.data.pairs import PairBatch
from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.decoders.base import Decoder
from seq2seq_lightning.encoders.base import Encoder, EncoderOutput
from seq2seq_lightning.metrics.cider import CIDErD
from seq2seq_lightning.modules.base import Seq2SeqModule
from seq2seq_lightning.search.base import SearchStrategy

log = logging.getLogger(__name__)
STAGES = ("val", "test")


class CaptioningModule(Seq2SeqModule):
    """Image captioning: image -> caption.

    Metrics: corpus BLEU-1..4 against all references (0-100; ``val/bleu4``, ``test/bleu1``..``test/bleu4``)
    and CIDEr-D (``val/cider``, ``test/cider``), plus loss and perplexity. The evaluation image transform
    (size, mean, std) is taken from the data module when training starts and kept in the checkpoint, so
    :meth:`caption` prepares images the way training saw them.

    Args:
        encoder: the image encoder (a registry name such as ``cnn``, or a class path, with ``init_args``).
            Default: the built-in ``cnn``.
        decoder: the conditional LM (a registry name such as ``rnn``, or a class path, with
            ``init_args``); the module passes the caption vocabulary size and the encoder's output size.
            Default: the built-in ``rnn`` with its defaults.
        strategy: how captions are searched in validation, test, predict and ``caption``
            (``greedy``, ``beam``, ``sampling`` or a plugin's name).
        tokenizers: the serialized caption tokenizer (``{"target": json}``); linked from the data module
            on the command line and stored in every checkpoint.
        label_smoothing: label smoothing of the training cross-entropy (padding is ignored).
        max_len: most decoding steps of a caption, EOS included.
        batch_size: images per batch inside :meth:`caption`.
        optimizer: the optimizer, called with the parameters (default: Adam, lr 1e-3).
        lr_scheduler: an optional learning-rate scheduler, called with the optimizer;
            ``ReduceLROnPlateau`` watches ``val/loss``.
        num_examples: example captions kept from validation and test and printed at the end of fit
            and test.
    """

    modality = "image"
    module_passed: ClassVar[dict[str, tuple[str, ...]]] = {"encoder": (), "decoder": ("vocab_size", "memory_size")}
    decoding_settings = Seq2SeqModule.decoding_settings | {"max_len", "batch_size"}

    def __init__(
        self,
        encoder: Callable[[], Encoder] | None = None,
        decoder: Callable[[int, int], Decoder] | None = None,
        strategy: SearchStrategy | None = None,
        tokenizers: dict[str, str] | None = None,
        label_smoothing: float = 0.1,
        max_len: int = 30,
        batch_size: int = 32,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_examples: int = 5,
    ) -> None:
        if not tokenizers or "target" not in tokenizers:
            raise ValueError("CaptioningModule needs tokenizers={'target': json} (the data module provides "
                             "it; checkpoints carry it)")
        target_tok = Tokenizer.from_json(tokenizers["target"])
        encoder_module = self.build_encoder("cnn" if encoder is None else encoder)
        super().__init__(encoder_module, decoder, strategy, target_tok, label_smoothing, optimizer, lr_scheduler,
                         num_examples)
        self.save_hyperparameters()
        self.max_len, self.batch_size = max_len, batch_size
        self.image_transform: dict[str, Any] = ImageTransform().spec()
        self.bleu = torch.nn.ModuleDict({f"{s}_{n}": BLEUScore(n_gram=n) for s in STAGES for n in range(1, 5)})
        self.cider = torch.nn.ModuleDict({s: CIDErD() for s in STAGES})
        self.skipped_images = 0
        self.skipped_batches = 0  # batches with no readable image (nothing to compute on)

    # -- hooks ---------------------------------------------------------------------------------
    def encode(self, batch: ImageBatch) -> EncoderOutput:
        return self.encoder(batch.images)  # (B, 3, H, W) -> memory (B, h*w, D)

    def max_lengths(self, batch: ImageBatch) -> Tensor:
        return torch.full((batch.images.size(0),), self.max_len, dtype=torch.long)  # (B,)

    def update_metrics(self, stage: str, hyps: list[str], batch: ImageBatch) -> None:
        refs = [list(r) for r in batch.references]
        for n in range(1, 5):
            self.bleu[f"{stage}_{n}"].update(hyps, refs)
        self.cider[stage].update(hyps, refs)

    def metrics_for(self, stage: str) -> list[Metric]:
        extra = [self.bleu[f"{stage}_{n}"] for n in range(1, 5)] + [self.cider[stage]] if stage in STAGES else []
        return super().metrics_for(stage) + extra

    def log_metrics(self, stage: str) -> None:
        orders = range(1, 5) if stage == "test" else (4,)
        for n in orders:
            self.log(f"{stage}/bleu{n}", self.bleu[f"{stage}_{n}"].compute() * 100.0)
        self.log(f"{stage}/cider", self.cider[stage].compute())

    # -- examples ----------------------------------------------------------------------------------
    def example_extras(self, batch: ImageBatch, i: int) -> dict[str, Any]:
        """The example's image as the network saw it ((3, H, W) float in [0, 1]) and the encoder's grid."""
        transform = ImageTransform.from_spec(self.image_transform)
        return {"image": transform.unnormalize(batch.images[i].detach().float().cpu()),
                "grid": getattr(self.encoder, "grid_shape", None)}

    # -- unreadable images: skipped and counted --------------------------------------------------
    def _count_skipped(self, batch: ImageBatch, stage: str) -> bool:
        """Logs the batch's skipped images and whether the whole batch was skipped (summed over the
        epoch and over processes); whether anything is left to compute on."""
        skipped = batch.skipped
        readable = batch.images is not None and batch.images.size(0) > 0
        if skipped:
            self.skipped_images += skipped
            log.warning("%d unreadable %s image(s) skipped (%d so far)", skipped, stage, self.skipped_images)
        if not readable:
            self.skipped_batches += 1
        if self._trainer is not None:  # every process logs both at every step: the epoch-end sum syncs them
            for name, value in (("skipped_images", skipped), ("skipped_batches", int(not readable))):
                self.log(f"{stage}/{name}", float(value), reduce_fx="sum", on_step=False, on_epoch=True,
                         batch_size=1, sync_dist=True)
        return readable

    def training_step(self, batch: ImageBatch, batch_idx: int) -> Tensor | None:
        """The loss of the readable images; for a batch with none, nothing (Lightning skips the optimizer
        step), or under a parallel strategy (DDP, even on one device) :meth:`idle_loss`."""
        if self._count_skipped(batch, "train"):
            return super().training_step(batch, batch_idx)
        parallel = self._trainer is not None and isinstance(self.trainer.strategy, ParallelStrategy)
        return self.idle_loss() if parallel else None

    def idle_loss(self) -> Tensor:
        """A zero loss that reaches every trainable parameter, for a process whose batch had no readable image.

        Under DDP every process must run backward at every step: the gradients are all-reduced parameter
        by parameter, and a process that returned nothing would leave the others waiting (or fail the next
        step's reduction). This loss gives every parameter a zero gradient, so the step averages the
        other processes' gradients with zeros: the batch counts as an empty one, and the processes stay
        in step and keep equal weights.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return torch.zeros((), device=self.device, requires_grad=True)
        return torch.stack([p.float().sum() for p in params]).sum() * 0.0

    def validation_step(self, batch: ImageBatch, batch_idx: int) -> dict[str, Any] | None:
        return super().validation_step(batch, batch_idx) if self._count_skipped(batch, "val") else None

    def test_step(self, batch: ImageBatch, batch_idx: int) -> dict[str, Any] | None:
        return super().test_step(batch, batch_idx) if self._count_skipped(batch, "test") else None

    def predict_step(self, batch: ImageBatch, batch_idx: int) -> list[dict[str, Any]]:
        """One row per input image; an unreadable one gets ``output`` "" and its ``error``. Pairs to
        score (``seq2seq score``) are scored by the base class, their errors included."""
        if isinstance(batch, PairBatch):
            return super().predict_step(batch, batch_idx)
        errors = batch.errors or [None] * len(batch)
        good = [i for i, e in enumerate(errors) if e is None]
        readable = batch if len(good) == len(errors) else batch.rows(good)
        rows = super().predict_step(readable, batch_idx) if good else []
        for i, error in enumerate(errors):
            if error is not None:
                rows.append({"index": int(batch.index[i]), "input": self.source_repr(batch, i), "output": "",
                             "score": None, "nbest": [], "error": error})
        return sorted(rows, key=lambda row: row["index"])

    # -- the evaluation transform travels with the checkpoint --------------------------------------
    def setup(self, stage: str) -> None:
        """Training takes the data module's image preparation (a resumed checkpoint's wins later)."""
        transform = getattr(getattr(self._trainer, "datamodule", None), "image_transform", None)
        if stage == "fit" and isinstance(transform, ImageTransform):
            self.image_transform = transform.spec()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["image_transform"] = dict(self.image_transform)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("image_transform") is not None:
            self.image_transform = dict(checkpoint["image_transform"])

    def _check_transform(self) -> None:
        """Warns when the data module prepares images otherwise than the network was trained on."""
        transform = getattr(getattr(self._trainer, "datamodule", None), "image_transform", None)
        if isinstance(transform, ImageTransform) and transform.spec() != self.image_transform:
            log.warning("the data module prepares images as %s but the model was trained on %s; set the data "
                        "module's image_size/mean/std to match", transform.spec(), self.image_transform)

    def on_test_start(self) -> None:
        self._check_transform()

    def on_predict_start(self) -> None:
        self._check_transform()

    # -- Python API ----------------------------------------------------------------------------
    def caption(self, images: list[Image.Image | str | os.PathLike], strategy: SearchStrategy | str | None = None,
                **strategy_kwargs: Any) -> list[str]:
        """Caption images (PIL images or paths; any size and mode), batched internally.

        Raises :class:`~seq2seq_lightning.data.images.ImageLoadError` naming an image that cannot be read.
        """
        search = self.build_strategy(strategy, **strategy_kwargs)
        was_training = self.training
        self.eval()
        out: list[str] = []
        try:
            for start in range(0, len(images), self.batch_size):
                out += self.detokenize(self.search(self.make_batch(images[start : start + self.batch_size]), search))
        finally:
            self.train(was_training)
        return out

    def score(self, images: list[Image.Image | str | os.PathLike], captions: list[str]) -> list[float]:
        """The model's log-probability of each caption given its image (forced decoding), batched.

        A score is the sum of log P of the caption's tokens and of the EOS ending it (an empty caption:
        the EOS alone), in input order. It is the score of the caption *as the caption tokenizer
        encodes it*: pass captions normalised as training saw them
        (:func:`~seq2seq_lightning.data.caption_formats.normalize_caption`; what :meth:`caption` returns
        already is). Per-token scores: :func:`~seq2seq_lightning.analysis.scoring.score_texts`.
        Raises :class:`~seq2seq_lightning.data.images.ImageLoadError` naming an image that cannot be read.
        """
        return [s.log_prob for s in score_texts(self, list(images), list(captions), self.make_batch, self.batch_size)]

    def make_batch(self, images: list[Image.Image | str | os.PathLike]) -> ImageBatch:
        """PIL images or paths -> a batch on the module's device, prepared as training prepared them."""
        transform = ImageTransform.from_spec(self.image_transform)
        pixels = torch.stack([transform(load_image(x, draft_size=transform.size)) for x in images])  # (B, 3, H, W)
        return ImageBatch(images=pixels.to(self.device), index=torch.arange(len(images), device=self.device))
