"""CNNEncoder: registry name, shapes per backbone, weights from files or the hub cache (never downloaded),
freezing the lower stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from seq2seq_lightning.encoders.base import Encoder
from seq2seq_lightning.encoders.cnn import BACKBONES, CNNEncoder, hub_cache_file
from seq2seq_lightning.registry import ENCODERS


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty torch hub cache, and any attempt to download fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_registered_as_cnn() -> None:
    assert "cnn" in ENCODERS.names()
    encoder = ENCODERS.build("cnn", width_mult=0.25)
    assert isinstance(encoder, CNNEncoder) and isinstance(encoder, Encoder)


@pytest.mark.parametrize("backbone,width_mult,size,grid", [
    ("resnet18", 0.25, 96, (3, 3)), ("resnet50", 0.125, 64, (2, 2)), ("mobilenet_v3_small", 0.5, 64, (2, 2)),
    ("efficientnet_b0", 0.25, 64, (2, 2)),
])
def test_memory_is_the_grid_and_summary_its_mean(backbone: str, width_mult: float, size: int,
                                                 grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    encoder = CNNEncoder(backbone, width_mult=width_mult).eval()
    out = encoder(torch.randn(2, 3, size, size))
    s = grid[0] * grid[1]
    assert out.memory.shape == (2, s, encoder.output_size)
    assert out.mask.shape == (2, s) and out.mask.dtype == torch.bool and bool(out.mask.all())
    assert out.summary.shape == (2, encoder.output_size)
    torch.testing.assert_close(out.summary, out.memory.mean(dim=1))
    assert encoder.grid_shape == grid


def test_width_mult_sets_channels() -> None:
    assert CNNEncoder("resnet18", width_mult=0.25).output_size == 128  # 16 * 8
    assert CNNEncoder("resnet34", width_mult=0.25).output_size == 128
    assert CNNEncoder("resnet50", width_mult=0.25).output_size == 512  # 16 * 8 * 4
    assert CNNEncoder("mobilenet_v3_large", width_mult=0.5).output_size == 480


def test_projection_and_alexnet_fc7() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 127, 127)
    plain = CNNEncoder("alexnet").eval()
    out = plain(images)
    assert plain.output_size == 4096 and out.memory.shape == (2, 1, 4096) and out.summary.shape == (2, 4096)
    torch.testing.assert_close(out.memory[:, 0], out.summary)
    assert bool((out.summary >= 0).all())  # fc7 after its ReLU
    projected = CNNEncoder("alexnet", projection_size=32).eval()
    out = projected(images)
    assert out.memory.shape == (2, 9, 32) and out.summary.shape == (2, 32)  # the 3x3 pool5 grid
    assert projected.grid_shape == (3, 3)
    small = CNNEncoder("resnet18", width_mult=0.25, projection_size=24)
    assert small.output_size == 24 and small(torch.randn(1, 3, 64, 64)).memory.shape == (1, 4, 24)


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    encoder = CNNEncoder("resnet18", weights=str(path)).eval()
    torch.testing.assert_close(encoder.stages[0][0].weight, reference.conv1.weight)
    torch.testing.assert_close(encoder.stages[4][1].conv2.weight, reference.layer4[1].conv2.weight)
    # a checkpoint-style {"state_dict": ...} with DDP's "module." prefix works too
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped)
    again = CNNEncoder("resnet18", weights=str(wrapped)).eval()
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again(images).memory, encoder(images).memory)


def test_weights_file_of_another_backbone_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="backbone"):
        CNNEncoder("resnet18", weights=str(path))


def test_torchvision_weights_name_only_from_the_hub_cache() -> None:
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = hub_cache_file(url)
    with pytest.raises(FileNotFoundError) as info:
        CNNEncoder("resnet18", weights="IMAGENET1K_V1")
    message = str(info.value)
    assert str(cached) in message and url in message and "weights=<path" in message
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        encoder = CNNEncoder("resnet18", weights=name)
        torch.testing.assert_close(encoder.stages[0][0].weight, reference.conv1.weight)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        CNNEncoder("resnet99")
    with pytest.raises(ValueError, match="neither an existing file nor a torchvision weights name"):
        CNNEncoder("resnet18", weights="missing.pth")
    with pytest.raises(ValueError, match="width_mult"):
        CNNEncoder("resnet18", weights="DEFAULT", width_mult=0.5)
    assert CNNEncoder("resnet18", weights="none", width_mult=0.25).output_size == 128


def test_trainable_layers_freezes_the_lower_stages() -> None:
    torch.manual_seed(0)
    encoder = CNNEncoder("resnet18", width_mult=0.25, trainable_layers=2, projection_size=8)
    encoder.train()
    assert [any(p.requires_grad for p in s.parameters()) for s in encoder.stages] == [False, False, False,
                                                                                       True, True]
    assert [s.training for s in encoder.stages] == [False, False, False, True, True]
    stem_bn = encoder.stages[0][1]
    before = stem_bn.running_mean.clone()
    out = encoder(torch.randn(4, 3, 64, 64))
    out.summary.sum().backward()
    torch.testing.assert_close(stem_bn.running_mean, before)  # frozen statistics stay
    assert encoder.stages[0][0].weight.grad is None and encoder.stages[4][0].conv1.weight.grad is not None
    frozen_all = CNNEncoder("resnet18", width_mult=0.25, trainable_layers=0, projection_size=8)
    trainable = [n for n, p in frozen_all.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("project") for n in trainable)


def test_every_backbone_name_is_known() -> None:
    assert set(BACKBONES) == {"resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
                              "efficientnet_b0", "alexnet"}
