"""Convolutional image encoder over torchvision backbones.

The memory is the backbone's last spatial feature grid, one vector per cell (for attention); the
summary is the grid's mean (for alexnet, its classic 4096-d fc7 feature). Images arrive resized and
normalised by the data side; nothing here downloads anything.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import efficientnet, mobilenetv3
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from seq2seq_lightning.encoders.base import Encoder, EncoderOutput

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
             "alexnet")
_RESNETS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
            "resnet50": (Bottleneck, [3, 4, 6, 3])}
_HEADS = ("fc.", "classifier.")  # classification heads: never used, never required in a weights file


class _NarrowResNet(nn.Module):
    """torchvision's ResNet layout (same module names) with ``width`` channels in the first stage."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(conv1x1(inplanes, planes * block.expansion, stride),
                                           nn.BatchNorm2d(planes * block.expansion))
            stage = [block(inplanes, planes, stride, downsample)]
            inplanes = planes * block.expansion
            stage += [block(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _torchvision_model(backbone: str, width_mult: float) -> nn.Module:
    """The classification model (randomly initialised) whose parameter names match torchvision's."""
    if width_mult == 1.0:
        return torchvision.models.get_model(backbone, weights=None)
    if backbone in _RESNETS:
        block, layers = _RESNETS[backbone]
        return _NarrowResNet(block, layers, max(1, round(64 * width_mult)))
    if backbone.startswith("mobilenet_v3"):
        setting, last_channel = mobilenetv3._mobilenet_v3_conf(backbone, width_mult=width_mult)
        return mobilenetv3.MobileNetV3(setting, last_channel)
    if backbone == "efficientnet_b0":
        setting, last_channel = efficientnet._efficientnet_conf(backbone, width_mult=width_mult, depth_mult=1.0)
        return efficientnet.EfficientNet(setting, 0.2, last_channel=last_channel)
    raise ValueError(f"width_mult is not supported for {backbone}; use width_mult=1.0")


def hub_cache_file(url: str) -> Path:
    """Where torchvision keeps the weights file of ``url`` (``<torch hub dir>/checkpoints/<name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def read_weights(weights: str, backbone: str) -> dict[str, Tensor]:
    """A state dict from a local file or from a torchvision weights name found in the hub cache.

    Never downloads: a weights name whose file is not cached is a :class:`FileNotFoundError` that says
    where the file must go.
    """
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        enum = torchvision.models.get_model_weights(backbone)
        prefix, _, name = weights.rpartition(".")
        try:
            if prefix not in ("", enum.__name__):
                raise KeyError(prefix)
            member = enum[name]
        except KeyError:
            known = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))
            raise ValueError(f"weights {weights!r} is neither an existing file nor a torchvision weights name "
                             f"of {backbone} ({known})") from None
        path = hub_cache_file(member.url)
        if not path.is_file():
            raise FileNotFoundError(
                f"the weights {type(member).__name__}.{member.name} are not in the torch hub cache ({path}) and "
                f"nothing is downloaded at run time. On a machine with internet access, download {member.url} "
                f"and copy it to {path} (or set TORCH_HOME), or pass weights=<path to a local state-dict file>; "
                f"weights=none trains from random initialisation")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


class CNNEncoder(Encoder):
    """A torchvision backbone read as a grid of feature vectors.

    ``forward(images (B, 3, H, W) float)`` gives memory (B, h*w, D), the backbone's last feature grid,
    an all-true mask (B, h*w) and summary (B, D), the grid's mean. ``grid_shape`` holds the (h, w) of the
    last forward (attention pictures use it). For ``alexnet`` the summary is the classic 4096-d fc7
    feature: with ``projection_size`` the memory is the pool5 grid (256-d) projected to the same size,
    without it the memory is fc7 as a single position.

    Args:
        backbone: resnet18, resnet34, resnet50, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0
            or alexnet.
        weights: ``None``/``"none"`` for random initialisation; a local state-dict file of the torchvision
            model; or a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``,
            ``ResNet18_Weights.IMAGENET1K_V1``), used only when its file is already in the torch hub cache
            (nothing is downloaded; the error says where to put the file). Pretrained weights expect
            ImageNet-normalised images (the data side's default).
        width_mult: channel multiplier of the backbone (resnets, mobilenets, efficientnet), e.g. 0.25 for
            a resnet18 whose first stage has 16 channels; only with random initialisation.
        trainable_layers: ``None`` trains the whole backbone; ``k`` trains only its top ``k`` stages (a
            resnet has 5: stem, layer1..layer4; mobilenets and efficientnet one per feature block;
            alexnet conv1..conv5, fc6, fc7) and freezes the rest, batch-norm statistics included.
            ``0`` freezes the backbone (only the projection trains).
        projection_size: a linear projection of memory and summary to this size D; ``None`` keeps the
            backbone's feature size.
        dropout: dropout on the memory and summary.
    """

    modality = "image"

    def __init__(
        self,
        backbone: str = "resnet18",
        weights: str | None = None,
        width_mult: float = 1.0,
        trainable_layers: int | None = None,
        projection_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; known backbones: {', '.join(BACKBONES)}")
        if weights is not None and weights.strip().lower() in ("", "none", "null", "random"):
            weights = None
        if weights is not None and width_mult != 1.0:
            raise ValueError("pretrained weights need width_mult=1.0")
        if trainable_layers is not None and trainable_layers < 0:
            raise ValueError(f"trainable_layers must be None or >= 0, got {trainable_layers}")
        self.backbone_name = backbone
        model = _torchvision_model(backbone, width_mult)
        if weights is not None:
            self._load(model, read_weights(weights, backbone))
        self.fc67: nn.Sequential | None = None
        if backbone in _RESNETS:
            stages = [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
                      model.layer1, model.layer2, model.layer3, model.layer4]
            channels = model.layer4[-1].conv3.out_channels if backbone == "resnet50" \
                else model.layer4[-1].conv2.out_channels
        elif backbone == "alexnet":
            convs = list(model.features)  # conv1 relu pool conv2 relu pool conv3 relu conv4 relu conv5 relu pool
            bounds = [0, 3, 6, 8, 10, 13]
            stages = [nn.Sequential(*convs[a:b]) for a, b in itertools.pairwise(bounds)]
            channels = 256
            self.avgpool = model.avgpool
            self.fc67 = nn.Sequential(*list(model.classifier)[:6])  # (dropout, fc6, relu, dropout, fc7, relu)
        else:
            stages = list(model.features)
            channels = model.features[-1].out_channels if hasattr(model.features[-1], "out_channels") \
                else model.features[-1][0].out_channels
        self.stages = nn.ModuleList(stages)
        self.frozen: list[nn.Module] = []
        if trainable_layers is not None:
            units: list[nn.Module] = list(self.stages)
            if self.fc67 is not None:
                units += [self.fc67[:3], self.fc67[3:]]
            self.frozen = units[: max(0, len(units) - trainable_layers)]
            for unit in self.frozen:
                unit.requires_grad_(False)
        summary_size = 4096 if self.fc67 is not None else channels
        if projection_size is not None:
            self.project = nn.Linear(channels, projection_size)
            self.project_summary = nn.Linear(summary_size, projection_size) if self.fc67 is not None else None
            self.output_size = projection_size
        else:
            self.project, self.project_summary = None, None
            self.output_size = summary_size
        self.dropout = nn.Dropout(dropout)
        self.grid_shape: tuple[int, int] | None = None

    @staticmethod
    def _load(model: nn.Module, state: dict[str, Tensor]) -> None:
        own = model.state_dict()
        kept = ("classifier.1.", "classifier.4.") if isinstance(model, torchvision.models.AlexNet) else ()
        needed = {k for k in own if not k.startswith(_HEADS) or k.startswith(kept)}  # alexnet keeps fc6, fc7
        missing = sorted(needed - set(state))
        if missing:
            raise ValueError(f"the weights file does not fit this backbone: it lacks {len(missing)} tensors, "
                             f"e.g. {missing[:3]}")
        unexpected = sorted(k for k in set(state) - set(own) if not k.startswith(_HEADS))
        if unexpected:
            raise ValueError(f"the weights file does not fit this backbone: it has {len(unexpected)} tensors "
                             f"this backbone lacks, e.g. {unexpected[:3]}")
        wrong = [k for k in needed if tuple(state[k].shape) != tuple(own[k].shape)]
        if wrong:
            raise ValueError(f"the weights file does not fit this backbone: {wrong[0]} has shape "
                             f"{tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        model.load_state_dict({k: state[k] for k in needed}, strict=False)

    def train(self, mode: bool = True) -> CNNEncoder:
        super().train(mode)
        for unit in self.frozen:  # frozen stages keep their batch-norm statistics
            unit.eval()
        return self

    def forward(self, images: Tensor) -> EncoderOutput:
        """images (B, 3, H, W) float -> memory (B, h*w, D), mask (B, h*w), summary (B, D)."""
        features = images
        for stage in self.stages:
            features = stage(features)  # (B, C, h, w) after the last stage
        _, _, h, w = features.shape
        self.grid_shape = (h, w)
        grid = features.flatten(2).transpose(1, 2)  # (B, h*w, C)
        if self.fc67 is not None:
            fc7 = self.fc67(torch.flatten(self.avgpool(features), 1))  # (B, 4096)
            if self.project is None:
                memory, summary = fc7[:, None, :], fc7  # (B, 1, 4096), (B, 4096)
                self.grid_shape = (1, 1)
            else:
                memory, summary = self.project(grid), self.project_summary(fc7)  # (B, h*w, D), (B, D)
        else:
            memory = self.project(grid) if self.project is not None else grid  # (B, h*w, D)
            summary = memory.mean(dim=1)  # (B, D)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)  # (B, S)
        return EncoderOutput(memory=self.dropout(memory), mask=mask, summary=self.dropout(summary))

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name!r}, output_size={self.output_size}"

