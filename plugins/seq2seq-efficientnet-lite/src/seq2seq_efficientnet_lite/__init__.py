"""A pretrained EfficientNet-Lite0 image encoder for seq2seq-lightning (registered as ``efficientnet_lite0``)."""

from seq2seq_efficientnet_lite.encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite0Encoder,
    input_affine,
    weight_file,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EfficientNetLite0Encoder", "input_affine", "weight_file"]
