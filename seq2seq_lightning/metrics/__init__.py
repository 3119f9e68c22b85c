"""Metrics that torchmetrics does not provide: CIDEr-D for captioning."""

from seq2seq_lightning.metrics.cider import CIDErD, cider_d, cider_d_scores

__all__ = ["CIDErD", "cider_d", "cider_d_scores"]
