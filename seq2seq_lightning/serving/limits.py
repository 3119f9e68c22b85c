"""The source length limit ``seq2seq serve`` cuts requests to: the one ``seq2seq predict`` applies.

Predict cuts each source to its data module's ``max_source_len`` tokens. Checkpoints do not carry
the data module's settings, so the limit is read, in order, from: the ``--max_source_len`` option;
the data module of ``--config`` (the config predict would be given); the ``config.yaml`` the
training run saved (beside its ``checkpoints/`` folder, or two folders up with the W&B logger: see
:func:`run_config`), when it describes the checkpoint's module class;
else the default of :class:`~seq2seq_lightning.data.translation.TranslationDataModule`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import yaml


def config_data_limit(config: str | os.PathLike) -> int | None:
    """``max_source_len`` of the data module a config builds (None when it has no such setting).

    Args:
        config: a ``seq2seq`` YAML config with a ``data: {class_path, init_args}`` section.
    """
    from lightning.pytorch import LightningDataModule

    from seq2seq_lightning.building import build

    data = (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}).get("data")
    if isinstance(data, str):
        data = {"class_path": data}
    if not isinstance(data, dict) or "class_path" not in data:
        return None
    given = data.get("init_args") or {}
    init_args = {k: v for k, v in given.items() if k != "tokenizers" and not k.endswith("_path")}  # no reading
    module = build({"class_path": data["class_path"], "init_args": init_args}, LightningDataModule, what="data")
    limit = getattr(module, "max_source_len", None)
    return int(limit) if limit is not None else None


def run_config(ckpt_path: str | os.PathLike, model_class_path: str | None) -> Path | None:
    """The ``config.yaml`` of the training run a checkpoint belongs to, if it names the same module class.

    The nearest one of the checkpoint's four enclosing folders: ``RUN/checkpoints/x.ckpt`` without a
    logger or with CSV and TensorBoard loggers (their version folders included), and
    ``RUN/PROJECT/ID/checkpoints/x.ckpt`` with the W&B logger, which saves ``config.yaml`` in ``RUN``."""
    ckpt = Path(ckpt_path).resolve()
    for folder in ckpt.parents[:4]:
        found = folder / "config.yaml"
        if found.is_file():
            try:
                model = (yaml.safe_load(found.read_text(encoding="utf-8")) or {}).get("model") or {}
            except yaml.YAMLError:
                return None
            named = model.get("class_path") if isinstance(model, dict) else model
            return found if model_class_path is None or named == model_class_path else None
    return None


def source_limit(ckpt_path: str | os.PathLike, hparams: dict[str, Any], max_source_len: int | None = None,
                 config: str | os.PathLike | None = None) -> tuple[int, str]:
    """The source limit and where it came from (for the startup log).

    Args:
        ckpt_path: the served checkpoint.
        hparams: its hyperparameters (``_class_path`` picks the run config that matches).
        max_source_len: an explicit limit, which wins.
        config: the config ``seq2seq predict`` would be given.
    """
    if max_source_len is not None:
        if max_source_len < 1:
            raise ValueError(f"max_source_len must be positive, got {max_source_len}")
        return max_source_len, "--max_source_len"
    saved = run_config(ckpt_path, hparams.get("_class_path"))
    for source, path in (("--config", config), ("the run's config", saved)):
        if path is not None:
            limit = config_data_limit(path)
            if limit is not None:
                return limit, f"{source} {os.fspath(path)}"
    from seq2seq_lightning.data.translation import TranslationDataModule

    default = inspect.signature(TranslationDataModule).parameters["max_source_len"].default
    return int(default), "the TranslationDataModule default"
