"""What the ImageNet weights buy: probe pooled features on small synthetic images, pretrained vs random.

Images are drawn with Pillow: one filled shape (circle, square, triangle or cross) of a random
colour, size, position and rotation on a noisy background of another colour. Two 4-way tasks are
read off the same images: the shape, and the shape's colour family (red, green, blue, yellow).
Features are the encoder's ``summary`` (the average of the last feature grid); they are
standardized and classified by nearest centroid (cosine) and by a linear probe (L2-regularised
multinomial logistic regression), trained on one split and scored on another.

    python -m seq2seq_efficientnet_lite.probe --per-class 100 --size 96
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

SHAPES = ("circle", "square", "triangle", "cross")
HUES = {"red": 0.0, "yellow": 1 / 6, "green": 1 / 3, "blue": 2 / 3}


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        pts = [(x * r * 0.8, y * r * 0.8) for x, y in corners]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    else:  # cross: a plus sign of arm width r/2.5
        a, b = r, r / 2.5
        pts = [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b),
               (-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def draw(shape: str, hue: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``shape`` in a jittered ``hue`` on a noisy background."""
    bg_hue = (HUES[hue] + rng.uniform(0.25, 0.75)) % 1.0  # away from the shape's hue
    background = _hsv_to_rgb(bg_hue, rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.9))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    r = size * rng.uniform(0.18, 0.34)
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    colour = _hsv_to_rgb((HUES[hue] + rng.uniform(-0.04, 0.04)) % 1.0, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
    if shape == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        pen.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dataset(per_class: int, size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """images (N, 3, size, size) in [0, 1], shape labels (N,), hue labels (N,); N = 16 * per_class
    (every shape x hue pair ``per_class`` times)."""
    rng = np.random.default_rng(seed)
    images, shapes, hues = [], [], []
    for _ in range(per_class):
        for s, shape in enumerate(SHAPES):
            for h, hue in enumerate(HUES):
                images.append(np.asarray(draw(shape, hue, size, rng), dtype=np.float32) / 255.0)
                shapes.append(s)
                hues.append(h)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(shapes), torch.tensor(hues)


@torch.no_grad()
def pooled_features(encoder: torch.nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """(N, C) the encoder's summary of every image, in inference mode."""
    encoder.eval()
    return torch.cat([encoder(images[i : i + batch_size]).summary for i in range(0, len(images), batch_size)])


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (test - mean) / std


def nearest_centroid_accuracy(train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor) -> float:
    train, test = standardize(train, test)
    classes = y_train.unique()
    centroids = torch.stack([train[y_train == c].mean(0) for c in classes])  # (K, C)
    sims = torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(centroids, dim=1).T
    return float((classes[sims.argmax(1)] == y_test).float().mean())


def linear_probe_accuracy(train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor,
                          weight_decay: float = 1e-2, steps: int = 200) -> float:
    train, test = standardize(train.double(), test.double())
    k = int(y_train.max()) + 1
    w = torch.zeros(train.size(1), k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(train @ w + b, y_train) + weight_decay * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((test @ w + b).argmax(1) == y_test).float().mean())


def recalibrate_batch_norm(encoder: torch.nn.Module, images: Tensor, batch_size: int = 64) -> None:
    """Re-estimate every batch-norm's running statistics on ``images`` (cumulative average)."""
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for m in encoder.modules():  # no stochastic depth while measuring
        m.training = isinstance(m, torch.nn.BatchNorm2d)
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            encoder(images[i : i + batch_size])
    encoder.eval()


def main(argv: list[str] | None = None) -> None:
    from seq2seq_efficientnet_lite.encoder import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0Encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=100, help="images per (shape, hue) pair in each split / 4")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    per_pair = max(1, args.per_class // 4)
    x_train, shape_train, hue_train = make_dataset(per_pair, args.size, seed=args.seed)
    x_test, shape_test, hue_test = make_dataset(per_pair, args.size, seed=args.seed + 1000)
    print(f"{len(x_train)} train / {len(x_test)} test images of {args.size}x{args.size}, "
          f"torch threads: {torch.get_num_threads()}")

    features: dict[str, tuple[Tensor, Tensor]] = {}
    pixels = torch.nn.functional.adaptive_avg_pool2d
    features["raw pixels (16x16x3)"] = (pixels(x_train, 16).flatten(1), pixels(x_test, 16).flatten(1))
    # The probe's images are RGB in [0, 1]. The ablation feeds the network ImageNet-standardized
    # images instead of its own [-1, 1] range, by declaring the input statistics that make the
    # encoder's mapping produce exactly that.
    raw = {"input_mean": (0.0, 0.0, 0.0), "input_std": (1.0, 1.0, 1.0)}
    imagenet_inside = {"input_mean": tuple((127 - 128 * m / s) / 255 for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)),
                       "input_std": tuple(128 / (255 * s) for s in IMAGENET_STD)}
    for name, kwargs in [("EfficientNet-Lite0, random init", {"pretrained": False, **raw}),
                         ("EfficientNet-Lite0, random init + BN stats", {"pretrained": False, "freeze": False, **raw}),
                         ("EfficientNet-Lite0, ImageNet weights, network fed ImageNet-standardized input",
                          {"pretrained": True, **imagenet_inside}),
                         ("EfficientNet-Lite0, ImageNet weights", {"pretrained": True, **raw})]:
        encoder = EfficientNetLite0Encoder(**kwargs)
        if "BN stats" in name:
            recalibrate_batch_norm(encoder, x_train)
        start = time.perf_counter()
        features[name] = (pooled_features(encoder, x_train), pooled_features(encoder, x_test))
        elapsed = time.perf_counter() - start
        print(f"  {name}: {len(x_train) + len(x_test)} images encoded in {elapsed:.1f} s")

    print("\n| features | shape: centroid | shape: linear | colour: centroid | colour: linear |")
    print("|---|---|---|---|---|")
    for name, (f_train, f_test) in features.items():
        cells = []
        for y_train, y_test in ((shape_train, shape_test), (hue_train, hue_test)):
            cells.append(nearest_centroid_accuracy(f_train, y_train, f_test, y_test))
            cells.append(linear_probe_accuracy(f_train, y_train, f_test, y_test))
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
