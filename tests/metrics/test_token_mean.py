"""TokenMean: the token-weighted epoch mean; train/token_accuracy from a sample of steps stays finite."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.metrics import TokenMean


def test_token_mean_is_the_weighted_mean_and_nan_without_updates() -> None:
    metric = TokenMean()
    assert math.isnan(float(metric.compute()))
    values, weights = [2.0, 4.0, 1.0], [10, 30, torch.tensor(60)]
    for v, w in zip(values, weights):
        metric.update(torch.tensor(v), w)
    assert float(metric.compute()) == pytest.approx((2 * 10 + 4 * 30 + 1 * 60) / 100)
    metric.reset()
    metric.update(torch.tensor(float("nan")), 3)
    assert math.isnan(float(metric.compute()))  # a NaN loss is not hidden


def test_train_token_accuracy_is_measured_when_steps_are_not_logged(tmp_path: Path) -> None:
    data = DatesDataModule(num_train=64, num_val=8, num_test=8, batch_size=16)  # 4 steps an epoch
    torch.manual_seed(0)
    small = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}
    model = TranslationModule(encoder=small, decoder=small, tokenizers=data.tokenizers)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        log_every_n_steps=50, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["train/token_accuracy"]) <= 1.0  # the first step of the epoch measured it
    assert math.isfinite(float(metrics["train/loss"])) and float(metrics["train/ppl"]) > 1.0
