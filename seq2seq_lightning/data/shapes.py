"""The embedded captioning default: generated scenes of coloured shapes, captioned by a small grammar.

A scene holds one to three shapes (circle, square, triangle, diamond) in six colours and two sizes,
each in its own third of the picture (left, middle, right) at a random height, on a light background.
Each scene has five reference captions, one per template of the grammar, e.g. "a small red circle to
the left of a large blue square" and "a large blue square to the right of a small red circle".
Images are drawn with Pillow when an item is read, so nothing is stored or downloaded; everything is
a function of the seed, and each split draws from its own stream (validation and test do not depend
on ``num_train``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from seq2seq_lightning.data.caption_formats import CaptionedImage
from seq2seq_lightning.data.captioning import CaptioningDataModule

KINDS = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (215, 35, 35), "green": (30, 150, 50), "blue": (35, 75, 215), "yellow": (235, 205, 25),
           "purple": (135, 50, 175), "orange": (245, 130, 15)}
SIZES = {"small": 0.085, "large": 0.15}  # radius, as a fraction of the image side
POSITIONS = ("on the left", "in the middle", "on the right")  # the three thirds of the picture
_MARGIN = 0.02


@dataclass(frozen=True)
class Shape:
    """One shape: what it is and where (centre and radius as fractions of the image side)."""

    kind: str
    colour: str
    size: str
    slot: int  # 0 left third, 1 middle, 2 right
    x: float
    y: float

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """Shapes from left to right on a light gray background."""

    shapes: tuple[Shape, ...]
    background: int = 255


def random_scene(rng: random.Random, max_shapes: int = 3) -> Scene:
    """One to ``max_shapes`` (at most 3) shapes, each in a different third of the picture."""
    count = rng.randint(1, min(max_shapes, 3))
    shapes = []
    for slot in sorted(rng.sample(range(3), count)):
        size = rng.choice(list(SIZES))
        radius = SIZES[size]
        low, high = slot / 3 + radius + _MARGIN, (slot + 1) / 3 - radius - _MARGIN
        x = rng.uniform(min(low, high), max(low, high))
        y = rng.uniform(radius + _MARGIN, 1 - radius - _MARGIN)
        shapes.append(Shape(rng.choice(KINDS), rng.choice(list(COLOURS)), size, slot, x, y))
    return Scene(tuple(shapes), background=rng.randint(225, 255))


def captions(scene: Scene) -> list[str]:
    """The five reference captions of a scene, one per template, in a fixed template order."""
    p = [shape.phrase for shape in scene.shapes]
    if len(p) == 1:
        where = POSITIONS[scene.shapes[0].slot]
        single = p[0].replace("a ", "a single ", 1)
        return [f"{p[0]} {where}", f"there is {p[0]} {where}", f"{where} there is {p[0]}",
                f"a picture of {p[0]} {where}", f"{single} {where}"]
    if len(p) == 2:
        return [f"{p[0]} to the left of {p[1]}", f"{p[1]} to the right of {p[0]}", f"{p[0]} and {p[1]}",
                f"there is {p[0]} left of {p[1]}", f"a picture of {p[0]} and {p[1]}"]
    return [f"{p[0]} {p[1]} and {p[2]} from left to right", f"{p[0]} to the left of {p[1]} and {p[2]}",
            f"{p[0]} and {p[1]} and {p[2]}", f"there are {p[0]} {p[1]} and {p[2]}",
            f"a picture of {p[0]} {p[1]} and {p[2]}"]


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as a ``size`` x ``size`` RGB image (drawn at twice the size and reduced: smooth edges)."""
    big = 2 * size
    image = Image.new("RGB", (big, big), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        cx, cy, r = shape.x * big, shape.y * big, SIZES[shape.size] * big
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape.kind == "square":
            h = 0.85 * r
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif shape.kind == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=fill)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)], fill=fill)
    return image.reduce(2)


def make_scenes(num_train: int, num_val: int, num_test: int, seed: int = 0,
                max_shapes: int = 3) -> dict[str, list[Scene]]:
    """Scenes of each split, each split from its own random stream."""
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    return {split: [random_scene(rng, max_shapes) for _ in range(n)]
            for split, n in sizes.items() for rng in [random.Random(f"shapes/{seed}/{split}")]}


class SceneRenderer:
    """``renderer(i)`` draws scene ``i`` (picklable, so DataLoader workers can use it)."""

    def __init__(self, scenes: list[Scene], size: int) -> None:
        self.scenes, self.size = scenes, size

    def __call__(self, index: int) -> Image.Image:
        return render(self.scenes[index], self.size)


class ShapesDataModule(CaptioningDataModule):
    """Generated shape scenes with five reference captions each (no files, no downloads).

    Word-level captions; validation and test scenes come from their own random streams, so they stay
    the same whatever ``num_train`` is. ``predict_path`` captions real image files like
    :class:`CaptioningDataModule` does.

    Args:
        num_train: training scenes (each trains with one of its five captions per epoch, cycling).
        num_val: validation scenes.
        num_test: test scenes.
        max_shapes: most shapes in a scene (1 to 3).
        image_size: side of the square images, in pixels.
        seed: seed of the scenes and of the training order.
        batch_size: images per training batch.
        eval_batch_size: images per validation/test/predict batch; None means batch_size.
        num_workers: DataLoader worker processes.
        predict_path: images to caption: a folder or a text file listing image paths (``seq2seq score``:
            pairs to score, ``image_path<TAB>caption`` or JSON lines with "image" and "caption").
        tokenizers: a serialized caption tokenizer ({"target": json}) to use instead of training one;
            filled from a checkpoint when resuming, testing or predicting.
    """

    def __init__(
        self,
        num_train: int = 20000,
        num_val: int = 500,
        num_test: int = 1000,
        max_shapes: int = 3,
        image_size: int = 64,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        predict_path: str | None = None,
        tokenizers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(predict_path=predict_path, image_size=image_size, tokenizer="word", vocab_size=1000,
                         max_caption_len=30, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         num_workers=num_workers, seed=seed, tokenizers=tokenizers)
        if not 1 <= max_shapes <= 3:
            raise ValueError(f"max_shapes must be 1, 2 or 3, got {max_shapes}")
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.max_shapes = max_shapes
        self._scenes: dict[str, list[Scene]] | None = None

    def scenes(self, split: str) -> list[Scene]:
        """The generated scenes of ``split`` ("train", "val" or "test")."""
        if self._scenes is None:
            self._scenes = make_scenes(self.num_train, self.num_val, self.num_test, self.seed, self.max_shapes)
        return self._scenes[split]

    def has_split(self, split: str) -> bool:
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_test}
        return sizes[split] > 0 if split in sizes else super().has_split(split)

    def load_split(self, split: str) -> list[CaptionedImage]:
        return [CaptionedImage(f"shapes/{split}/{i}", captions(scene)) for i, scene in enumerate(self.scenes(split))]

    def image_source(self, split: str) -> SceneRenderer:
        return SceneRenderer(self.scenes(split), self.image_transform.size)
