"""Metrics that torchmetrics does not provide: CIDEr-D for captioning, and the per-token epoch means."""

from seq2seq_lightning.metrics.cider import CIDErD, cider_d, cider_d_scores
from seq2seq_lightning.metrics.token_mean import TokenMean

__all__ = ["CIDErD", "TokenMean", "cider_d", "cider_d_scores"]
