"""Experiment tracking in Weights & Biases: run folders, offline fallback, config, sample tables.

Every file W&B writes (run files, staging, cache, settings, artifacts) goes under the run folder,
so nothing lands in the home directory; with no credentials and no ``WANDB_MODE``, runs are
offline: never a prompt, never a network wait.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from seq2seq_lightning.callbacks.examples import ExampleCollector

WANDB_HOST = "api.wandb.ai"


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def prepare_wandb(root: str | os.PathLike) -> Path:
    """Point all of W&B's folders into ``root/wandb`` and go offline without credentials.

    Returns the folder to use as the logger's ``save_dir``.
    """
    base = Path(root).resolve()
    folders = {"WANDB_DIR": base, "WANDB_CACHE_DIR": base / "wandb-cache", "WANDB_CONFIG_DIR": base / "wandb-config",
               "WANDB_DATA_DIR": base / "wandb-staging", "WANDB_ARTIFACT_DIR": base / "wandb-artifacts"}
    for var, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(folder)
    if not os.environ.get("WANDB_MODE") and not has_wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return base


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class LoggedSaveConfig(SaveConfigCallback):
    """Saves the resolved ``config.yaml`` in the run folder and logs it to W&B."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("tokenizers", None)
        model_args = (config.get("model") or {}).get("init_args") or {}
        model_args.pop("tokenizers", None)  # large JSON; the checkpoint carries it
        for logger in loggers:
            logger.experiment.config.update({"config": config}, allow_val_change=True)


class SampleTable(Callback):
    """After every validation, a W&B table of example outputs (source, reference, hypothesis; the
    image too when the example has one).

    Args:
        key: the table's name in the run.
    """

    def __init__(self, key: str = "val/samples") -> None:
        self.key = key

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        ExampleCollector.of(trainer)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = wandb_loggers(trainer)
        examples = ExampleCollector.of(trainer).examples["val"]
        if not loggers or not examples or trainer.sanity_checking or not trainer.is_global_zero:
            return
        import wandb

        columns = ["epoch", "source", "reference", "hypothesis"]
        with_image = any(ex.get("image") is not None for ex in examples)
        if with_image:
            columns.insert(1, "image")
        rows: list[list[Any]] = []
        for ex in examples:
            row: list[Any] = [trainer.current_epoch, ex["source"], ex["reference"], ex["hypothesis"]]
            if with_image:
                row.insert(1, wandb.Image(ex["image"]) if ex.get("image") is not None else None)
            rows.append(row)
        for logger in loggers:
            logger.experiment.log({self.key: wandb.Table(columns=columns, data=rows),
                                   "trainer/global_step": trainer.global_step})


def log_images(trainer: Trainer, key: str, images: list[Any], captions: list[str]) -> None:
    """Log PIL images (e.g. attention pictures) to every W&B logger of the trainer."""
    loggers = wandb_loggers(trainer)
    if not loggers or not images:
        return
    import wandb

    for logger in loggers:
        logger.experiment.log({key: [wandb.Image(img, caption=cap) for img, cap in zip(images, captions)],
                               "trainer/global_step": trainer.global_step})
