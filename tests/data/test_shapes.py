"""The shapes scenes: reproducible, independent splits, captions that say what the picture shows."""

from __future__ import annotations

import random

import torch

from seq2seq_lightning.data.shapes import (
    COLOURS,
    POSITIONS,
    SIZES,
    ShapesDataModule,
    captions,
    make_scenes,
    random_scene,
    render,
)


def test_scenes_are_reproducible_and_val_test_do_not_depend_on_num_train() -> None:
    a = make_scenes(50, 20, 20, seed=3)
    b = make_scenes(50, 20, 20, seed=3)
    c = make_scenes(500, 20, 20, seed=3)
    assert a == b
    assert a["val"] == c["val"] and a["test"] == c["test"] and a["train"] == c["train"][:50]
    assert make_scenes(50, 20, 20, seed=4)["val"] != a["val"]
    assert a["val"] != a["test"]


def test_shapes_are_left_to_right_in_their_own_thirds() -> None:
    rng = random.Random(0)
    counts = set()
    for _ in range(300):
        scene = random_scene(rng)
        counts.add(len(scene.shapes))
        slots = [s.slot for s in scene.shapes]
        assert slots == sorted(set(slots))
        for shape in scene.shapes:
            r = SIZES[shape.size]
            assert shape.slot / 3 <= shape.x - r and shape.x + r <= (shape.slot + 1) / 3
            assert 0 <= shape.y - r and shape.y + r <= 1
    assert counts == {1, 2, 3}
    assert {len(random_scene(rng, max_shapes=1).shapes) for _ in range(20)} == {1}


def test_five_distinct_captions_naming_every_shape_in_order() -> None:
    rng = random.Random(1)
    for _ in range(100):
        scene = random_scene(rng)
        refs = captions(scene)
        assert len(refs) == 5 and len(set(refs)) == 5
        phrases = [f"{s.size} {s.colour} {s.kind}" for s in scene.shapes]
        for ref in refs:
            assert all(p in ref for p in phrases)
        first = refs[0]
        positions = [first.index(p) for p in phrases]
        if len(set(phrases)) == len(phrases):
            assert positions == sorted(positions)  # the first template reads left to right
        if len(phrases) == 1:
            assert first.endswith(POSITIONS[scene.shapes[0].slot])
        if len(phrases) == 2:
            assert first == f"a {phrases[0]} to the left of a {phrases[1]}"


def test_render_draws_each_shape_in_its_colour_at_its_place() -> None:
    rng = random.Random(2)
    for _ in range(30):
        scene = random_scene(rng)
        image = render(scene, 64)
        assert image.size == (64, 64) and image.mode == "RGB"
        assert render(scene, 64).tobytes() == image.tobytes()
        for shape in scene.shapes:
            pixel = image.getpixel((int(shape.x * 64), int(shape.y * 64 + 2)))  # a bit below the centre
            assert max(abs(p - q) for p, q in zip(pixel, COLOURS[shape.colour])) <= 40, (shape, pixel)
    assert render(scene, 96).size == (96, 96)


def test_datamodule_batches() -> None:
    dm = ShapesDataModule(num_train=40, num_val=10, num_test=10, batch_size=8, eval_batch_size=5)
    tok = dm.target_tokenizer
    assert tok.kind == "word" and tok.vocab_size < 60
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape == (5, 3, 64, 64) and batch.images.dtype == torch.float32
    assert batch.index.tolist() == [0, 1, 2, 3, 4] and batch.skipped == 0
    assert batch.source_text[0] == "shapes/val/0"
    assert all(len(r) == 5 for r in batch.references)
    assert batch.target_text == [r[0] for r in batch.references]
    target = batch.target
    assert (target[:, 0] == tok.bos_id).all()
    for row, n in zip(target, batch.target_lengths):
        assert row[n - 1] == tok.eos_id and (row[n:] == tok.pad_id).all()
    assert tok.decode(target[0].tolist()) == batch.target_text[0]
    train = list(dm.train_dataloader())
    assert sum(len(b.index) for b in train) == 40
    assert sorted(i for b in train for i in b.index.tolist()) == list(range(40))
    scenes = dm.scenes("train")
    for b in train[:1]:
        for i, text in zip(b.index.tolist(), b.target_text):
            assert text in captions(scenes[i])


def test_training_captions_cycle_over_epochs() -> None:
    dm = ShapesDataModule(num_train=6, num_val=2, num_test=2, batch_size=6)
    dm.setup("fit")
    loader = dm.train_dataloader()
    seen: dict[int, set[str]] = {}
    for epoch in range(5):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            for i, text in zip(batch.index.tolist(), batch.target_text):
                seen.setdefault(i, set()).add(text)
    assert all(len(texts) == 5 for texts in seen.values())  # every caption once in five epochs
