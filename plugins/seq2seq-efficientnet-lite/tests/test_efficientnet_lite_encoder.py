"""The EfficientNet-Lite0 encoder against the image-encoder contract of seq2seq-lightning."""

from __future__ import annotations

import math
import socket

import pytest
import torch
from seq2seq_efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0Encoder, weight_file
from seq2seq_efficientnet_lite.probe import make_dataset, nearest_centroid_accuracy, pooled_features

from seq2seq_lightning.encoders import Encoder, EncoderOutput


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder().eval()


@pytest.fixture(scope="module")
def file_state() -> dict[str, torch.Tensor]:
    return torch.load(weight_file(), map_location="cpu", weights_only=True)


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_registered_through_the_entry_point() -> None:
    from seq2seq_lightning.registry import ENCODERS

    ENCODERS.reload()
    assert ENCODERS.get("efficientnet_lite0") is EfficientNetLite0Encoder
    entry = next(e for e in ENCODERS.entries() if e.name == "efficientnet_lite0")
    assert entry.dist == "seq2seq-efficientnet-lite"
    assert issubclass(EfficientNetLite0Encoder, Encoder)


def test_weights_load_offline(monkeypatch: pytest.MonkeyPatch, file_state: dict[str, torch.Tensor]) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    encoder = EfficientNetLite0Encoder(pretrained=True)
    own = encoder.network.state_dict()
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        assert torch.equal(own[key], file_state[key]), key
    assert "_fc.weight" in file_state and not any(k.startswith("_fc.") for k in own)  # classifier dropped


def test_random_init_differs_from_the_file(file_state: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    encoder = EfficientNetLite0Encoder(pretrained=False)
    assert not torch.equal(encoder.network._conv_stem.weight, file_state["_conv_stem.weight"])


@pytest.mark.parametrize(("height", "width"), [(224, 224), (37, 53), (97, 131), (1, 1), (64, 33)])
def test_shapes_for_any_size(pretrained: EfficientNetLite0Encoder, height: int, width: int) -> None:
    out = pretrained(images(2, height, width))
    cells = math.ceil(height / 32) * math.ceil(width / 32)
    assert isinstance(out, EncoderOutput)
    assert out.memory.shape == (2, cells, 1280) and out.summary.shape == (2, 1280)
    assert out.mask.shape == (2, cells) and out.mask.dtype == torch.bool and out.mask.all()
    assert pretrained.output_size == 1280
    torch.testing.assert_close(out.summary, out.memory.mean(1))


def test_features_are_deterministic_and_rows_independent(pretrained: EfficientNetLite0Encoder) -> None:
    x = images(3, 64, 80, seed=1)
    first = pretrained(x)
    torch.testing.assert_close(pretrained(x).memory, first.memory, rtol=0, atol=0)
    alone = pretrained(x[1:2])
    torch.testing.assert_close(alone.memory[0], first.memory[1], rtol=1e-4, atol=1e-4)
    # A frozen encoder gives the same features in training mode (batch norm and drop-connect stay off).
    pretrained.train()
    try:
        torch.testing.assert_close(pretrained(x).memory, first.memory, rtol=0, atol=0)
    finally:
        pretrained.eval()
    again = EfficientNetLite0Encoder().eval()
    torch.testing.assert_close(again(x).summary, first.summary, rtol=0, atol=0)


def test_frozen_parameters_have_no_gradient() -> None:
    encoder = EfficientNetLite0Encoder(freeze=True)
    assert all(not p.requires_grad for p in encoder.parameters())


def test_trainable_blocks_train_the_top_only() -> None:
    encoder = EfficientNetLite0Encoder(freeze=True, trainable_blocks=2).train()
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("network._conv_head", "network._bn1", "network._blocks.15."))
                             for n in trainable)
    assert any(n.startswith("network._blocks.15.") for n in trainable)
    frozen_bn, head_bn = encoder.network._blocks[3]._bn1, encoder.network._bn1
    assert not frozen_bn.training and head_bn.training
    before = frozen_bn.running_mean.clone(), head_bn.running_mean.clone()
    out = encoder(images(2, 64, 64))
    out.summary.sum().backward()
    assert torch.equal(frozen_bn.running_mean, before[0]) and not torch.equal(head_bn.running_mean, before[1])
    assert all(p.grad is not None for n, p in encoder.named_parameters() if n in trainable)


def test_unfrozen_trains_everything() -> None:
    encoder = EfficientNetLite0Encoder(pretrained=False, freeze=False)
    assert all(p.requires_grad for p in encoder.parameters())


def test_state_dict_round_trip(pretrained: EfficientNetLite0Encoder) -> None:
    """Checkpoints carry the weights: a random-init encoder loading the state dict matches."""
    copy = EfficientNetLite0Encoder(pretrained=False)
    copy.load_state_dict(pretrained.state_dict())
    x = images(1, 48, 48, seed=2)
    torch.testing.assert_close(copy.eval()(x).memory, pretrained(x).memory, rtol=0, atol=0)


def test_invalid_arguments() -> None:
    with pytest.raises(TypeError, match="image encoder"):
        EfficientNetLite0Encoder(1000)  # what a text module would pass (a vocabulary size)
    with pytest.raises(ValueError, match="trainable_blocks"):
        EfficientNetLite0Encoder(pretrained=False, trainable_blocks=19)
    with pytest.raises(ValueError, match="input_std"):
        EfficientNetLite0Encoder(pretrained=False, input_std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="3 values"):
        EfficientNetLite0Encoder(pretrained=False, input_mean=(0.5,))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        EfficientNetLite0Encoder(pretrained=False)(torch.rand(3, 32, 32))


def test_input_statistics_are_undone(pretrained: EfficientNetLite0Encoder) -> None:
    """Plain [0, 1] images declared as such give the features of ImageNet-standardized ones."""
    raw = images(2, 40, 40, seed=3)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    plain = EfficientNetLite0Encoder(input_mean=(0, 0, 0), input_std=(1, 1, 1)).eval()
    torch.testing.assert_close(plain(raw).memory, pretrained((raw - mean) / std).memory, rtol=1e-4, atol=1e-4)
    network_input = plain.input_scale * raw + plain.input_shift  # (255 x - 127) / 128
    torch.testing.assert_close(network_input, (255 * raw - 127) / 128)


def test_pretrained_features_tell_shapes_apart() -> None:
    """A small version of ``python -m seq2seq_efficientnet_lite.probe``: pooled pretrained features
    separate circles, squares, triangles and crosses; randomly initialised ones barely do."""
    x_train, y_train, _ = make_dataset(per_class=3, size=64, seed=0)  # 48 images in [0, 1]
    x_test, y_test, _ = make_dataset(per_class=3, size=64, seed=1)
    torch.manual_seed(0)
    raw = {"input_mean": (0, 0, 0), "input_std": (1, 1, 1)}
    scores = {}
    for name, encoder in (("pretrained", EfficientNetLite0Encoder(**raw)),
                          ("random", EfficientNetLite0Encoder(pretrained=False, **raw))):
        f_train, f_test = pooled_features(encoder, x_train), pooled_features(encoder, x_test)
        scores[name] = nearest_centroid_accuracy(f_train, y_train, f_test, y_test)
    assert scores["pretrained"] >= 0.75 and scores["pretrained"] > scores["random"] + 0.3, scores
