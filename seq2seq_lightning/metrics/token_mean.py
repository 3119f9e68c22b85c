"""A weighted running mean that never waits for the device: the per-token epoch means of loss, nll and
accuracy."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class TokenMean(Metric):
    """``sum(value * weight) / sum(weight)`` over an epoch, summed across processes when computed.

    Unlike torchmetrics' ``MeanMetric`` its ``update`` looks at no value (no NaN check), so a training
    step that updates it never makes the host wait for the device; a NaN value makes the mean NaN.
    ``compute`` of no update is NaN.
    """

    full_state_update = False
    total: Tensor
    weight: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: Tensor | float) -> None:
        """value: a scalar (the mean over ``weight`` tokens); weight: their number."""
        w = torch.as_tensor(weight, dtype=torch.float64, device=self.total.device)
        self.total += value.detach().to(torch.float64) * w
        self.weight += w

    def compute(self) -> Tensor:
        return (self.total / self.weight).float()
