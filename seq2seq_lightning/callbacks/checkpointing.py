"""Checkpoints written atomically, and a ``last.ckpt`` kept current for resuming."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seq2seq_lightning.checkpoints import load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to ``.<name>.tmp`` beside the target, flushes it to disk, then renames it over the
    target, so ``last.ckpt`` is always either the previous complete file or the new one. Loads
    with ``weights_only=True`` only."""

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_checkpoint(str(path).removeprefix("file://"), map_location=map_location)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec's transaction
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class LastCheckpoint(Callback):
    """Keeps ``last.ckpt`` current: every ``every_n_train_steps`` steps, at every epoch end and when
    training ends, so a killed run resumes (``--ckpt_path .../last.ckpt``) close to where it died,
    inside an epoch too.

    Args:
        every_n_train_steps: also save every this many optimizer steps (0: only at epoch ends).
        dirpath: the folder (default: the checkpoint folder of the run's ModelCheckpoint, else
            ``<log_dir>/checkpoints``).
        filename: the file name.
    """

    def __init__(self, every_n_train_steps: int = 200, dirpath: str | None = None,
                 filename: str = "last.ckpt") -> None:
        self.every_n_train_steps = every_n_train_steps
        self.dirpath = dirpath
        self.filename = filename
        self._saved_step = -1

    def path(self, trainer: Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath) / self.filename
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None)
        if not folder:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        return Path(folder) / self.filename

    def _save(self, trainer: Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self._saved_step == trainer.global_step:
            return
        # the whole training state (optimizer, loops, callbacks): what a resume needs; saying so also
        # keeps Lightning from announcing that it chose it
        trainer.save_checkpoint(self.path(trainer), weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        n = self.every_n_train_steps
        if n > 0 and trainer.global_step % n == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)
