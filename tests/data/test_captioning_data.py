"""CaptioningDataModule on small fixtures in each real format (real image files), image modes, EXIF
orientation, unreadable images in training and predict."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from seq2seq_lightning.data.caption_formats import detect_format, normalize_caption, read_captions
from seq2seq_lightning.data.captioning import (
    CaptionDataset,
    CaptioningDataModule,
    CaptionSampler,
    collate_captions,
)
from seq2seq_lightning.data.images import ImageLoadError, ImageTransform, list_images, load_image

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 210), (220, 200, 20), (120, 40, 160), (240, 120, 10)]


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def caption(i: int, k: int) -> str:
    return f"Image {i}: caption number {k}."


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """COCO layout: annotations/captions_{train,val}2017.json, images in train2017/ and val2017/."""
    for split, ids in (("train2017", range(6)), ("val2017", range(6, 8))):
        images, annotations = [], []
        for i in ids:
            name = f"{i:012d}.{'jpg' if i % 2 else 'png'}"
            write_image(tmp_path / split / name, COLOURS[i % 6])
            images.append({"id": i, "file_name": name, "width": 40, "height": 30})
            annotations += [{"id": 100 * i + k, "image_id": i, "caption": caption(i, k)} for k in range(3)]
        (tmp_path / "annotations").mkdir(exist_ok=True)
        data = {"info": {}, "images": images, "annotations": annotations}
        (tmp_path / "annotations" / f"captions_{split}.json").write_text(json.dumps(data))
    return tmp_path


@pytest.fixture
def karpathy(tmp_path: Path) -> Path:
    images = []
    for i, split in enumerate(["train", "train", "restval", "train", "val", "val", "test", "test"]):
        folder = "train2014" if split in ("train", "restval") else "val2014"
        write_image(tmp_path / "coco" / folder / f"img{i}.jpg", COLOURS[i % 6])
        images.append({"filepath": folder, "filename": f"img{i}.jpg", "split": split, "imgid": i,
                       "sentences": [{"raw": caption(i, k), "tokens": []} for k in range(5)]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


@pytest.fixture
def flickr(tmp_path: Path) -> Path:
    text = tmp_path / "Flickr8k_text"
    text.mkdir()
    names = [f"{1000 + i}_abc.jpg" for i in range(7)]
    for i, name in enumerate(names):
        write_image(tmp_path / "Flicker8k_Dataset" / name, COLOURS[i % 6])
    lines = [f"{name}#{k}\t{caption(i, k)}" for i, name in enumerate(names) for k in range(5)]
    (text / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (text / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:4]) + "\n")
    (text / "Flickr_8k.devImages.txt").write_text("\n".join(names[4:6]) + "\n")
    (text / "Flickr_8k.testImages.txt").write_text(names[6] + "\n")
    return text / "Flickr8k.token.txt"


def test_normalize_caption() -> None:
    assert normalize_caption("  A man's  HAT, on a table.\n") == "a man ' s hat on a table"
    assert normalize_caption("Two dogs!", lowercase=False) == "Two dogs"


def test_formats_are_detected(coco: Path, karpathy: Path, flickr: Path) -> None:
    assert detect_format(coco / "annotations" / "captions_train2017.json") == "coco"
    assert detect_format(karpathy) == "karpathy"
    assert detect_format(flickr) == "flickr8k"


def test_coco_files_per_split_and_image_folders(coco: Path) -> None:
    ann = coco / "annotations"
    dm = CaptioningDataModule(train_path=str(ann / "captions_train2017.json"),
                              val_path=str(ann / "captions_val2017.json"), image_size=32, batch_size=4)
    train = dm.load_split("train")
    assert len(train) == 6 and all(Path(item.image).is_file() for item in train)
    assert Path(train[0].image).parent.name == "train2017"
    assert train[1].captions == ["image 1 caption number 0", "image 1 caption number 1", "image 1 caption number 2"]
    assert Path(dm.load_split("val")[0].image).parent.name == "val2017"
    assert not dm.has_split("test")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (4, 3, 32, 32) and batch.target[:, 0].eq(2).all()
    val = next(iter(dm.val_dataloader()))
    assert val.references[0] == dm.load_split("val")[0].captions and val.source_text[0].endswith(".png")


def test_karpathy_splits_from_one_file(karpathy: Path) -> None:
    dm = CaptioningDataModule(train_path=str(karpathy), image_root=str(karpathy.parent / "coco"), image_size=32)
    assert [len(dm.load_split(s)) for s in ("train", "val", "test")] == [4, 2, 2]  # restval trains
    assert all(Path(i.image).is_file() for s in ("train", "val", "test") for i in dm.load_split(s))
    assert len(dm.load_split("test")[0].captions) == 5
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch.index.tolist() == [0, 1] and len(batch.references[1]) == 5


def test_flickr8k_tokens_with_split_lists(flickr: Path) -> None:
    dm = CaptioningDataModule(train_path=str(flickr), image_size=32, format="flickr8k")
    splits = {s: dm.load_split(s) for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [4, 2, 1]
    assert all(Path(i.image).is_file() for v in splits.values() for i in v)
    assert Path(splits["train"][0].image).parent.name == "Flicker8k_Dataset"
    assert splits["test"][0].captions[4] == "image 6 caption number 4"
    # without the split lists the file is one split: it trains, and serves val/test only when named
    for name in ("trainImages", "devImages", "testImages"):
        (flickr.parent / f"Flickr_8k.{name}.txt").unlink()
    assert set(read_captions(flickr)) == {"all"}
    dm = CaptioningDataModule(train_path=str(flickr), test_path=str(flickr))
    assert len(dm.load_split("train")) == 7 and len(dm.load_split("test")) == 7 and not dm.has_split("val")


def test_word_tokenizer_trained_on_training_captions(coco: Path) -> None:
    dm = CaptioningDataModule(train_path=str(coco / "annotations" / "captions_train2017.json"))
    tok = dm.target_tokenizer
    assert set(dm.tokenizers) == {"target"} and tok.kind == "word"
    assert tok.decode(tok.encode("image 3 caption number 1")) == "image 3 caption number 1"
    again = CaptioningDataModule(train_path=str(coco / "annotations" / "captions_train2017.json"),
                                 tokenizers=dm.tokenizers)
    assert again.target_tokenizer == tok
    with pytest.raises(ValueError, match="target"):
        CaptioningDataModule(tokenizers={"source": "{}", "target": "{}"})


def test_image_modes_become_rgb_and_exif_is_honoured(tmp_path: Path) -> None:
    import numpy as np

    Image.new("L", (8, 6), 90).save(tmp_path / "gray.png")
    Image.new("RGBA", (8, 6), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("P", (8, 6), 0).save(tmp_path / "palette.gif")
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = wide.getexif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    wide.save(tmp_path / "rotated.jpg", exif=exif)
    expected = {"gray.png": (90, 90, 90), "clear.png": (255, 255, 255), "cmyk.jpg": (255, 0, 0),
                "deep.png": (255, 255, 255)}
    for name, pixel in expected.items():
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and max(abs(a - b) for a, b in zip(image.getpixel((1, 1)), pixel)) <= 3, name
    assert load_image(tmp_path / "palette.gif").mode == "RGB"
    upright = load_image(tmp_path / "rotated.jpg")
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 2)), upright.getpixel((10, 37))
    assert top[2] > 200 > top[0] and bottom[0] > 200 > bottom[2]  # the blue strip is now on top
    tensor = ImageTransform(16)(load_image(tmp_path / "deep.png"))
    assert tensor.shape == (3, 16, 16)


def test_unreadable_training_images_are_counted_skips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from seq2seq_lightning.data.caption_formats import CaptionedImage
    from seq2seq_lightning.data.tokenizer import Tokenizer

    write_image(tmp_path / "ok.jpg", (10, 200, 10))
    (tmp_path / "text.jpg").write_text("not an image")
    items = [CaptionedImage(str(tmp_path / n), ["a green thing"]) for n in ("ok.jpg", "text.jpg", "missing.png")]
    tok = Tokenizer.train(["a green thing"], kind="word")
    dataset = CaptionDataset(items, ImageTransform(16), tok)
    with caplog.at_level(logging.WARNING):
        examples = [dataset[i] for i in range(3)]
    assert "text.jpg" in caplog.text and "missing.png" in caplog.text
    batch = collate_captions(examples, pad_id=0)
    assert batch.skipped == 2 and batch.images.shape == (1, 3, 16, 16) and batch.index.tolist() == [0]
    assert batch.target.shape[0] == 1
    none_left = collate_captions(examples[1:], pad_id=0)
    assert none_left.skipped == 2 and none_left.images is None
    kept = collate_captions(examples, pad_id=0, keep_errors=True)
    assert kept.images.shape == (3, 3, 16, 16) and kept.errors[0] is None
    assert "UnidentifiedImageError" in kept.errors[1] and "No such file" in kept.errors[2]


def test_predict_inputs_from_a_folder_or_a_list_file(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_image(folder / "b.JPG", (1, 2, 3))
    write_image(folder / "a.png", (1, 2, 3))
    data = (folder / "b.JPG").read_bytes()
    (folder / "c_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "d.jpg").write_text("a text file")
    (folder / "notes.txt").write_text("not an input")
    names = [Path(p).name for p in list_images(folder)]
    assert names == ["a.png", "b.JPG", "c_truncated.jpg", "d.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"photos/a.png\n\n{folder / 'd.jpg'}\n")
    assert list_images(listing) == [str(tmp_path / "photos" / "a.png"), "", str(folder / "d.jpg")]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nowhere")
    dm = CaptioningDataModule(predict_path=str(folder), image_size=16, batch_size=8, tokenizers=_tok_json())
    batch = next(iter(dm.predict_dataloader()))
    assert batch.index.tolist() == [0, 1, 2, 3] and batch.images.shape == (4, 3, 16, 16)
    assert batch.errors[:2] == [None, None] and "truncated" in batch.errors[2]
    assert batch.errors[3] is not None and batch.target is None
    with pytest.raises(ImageLoadError, match="d.jpg"):
        load_image(folder / "d.jpg")


def test_caption_sampler_orders_and_cycles() -> None:
    sampler = CaptionSampler([5, 2, 1], shuffle=True, seed=0)
    keys = {}
    for epoch in range(4):
        sampler.set_epoch(epoch)
        epoch_keys = list(sampler)
        assert sorted(i for i, _ in epoch_keys) == [0, 1, 2]
        for i, c in epoch_keys:
            keys.setdefault(i, []).append(c)
    assert keys[2] == [0, 0, 0, 0] and sorted(set(keys[1])) == [0, 1] and len(set(keys[0])) == 4
    assert list(CaptionSampler([1, 1], shuffle=False)) == [(0, 0), (1, 0)]


def _tok_json() -> dict[str, str]:
    from seq2seq_lightning.data.tokenizer import Tokenizer

    return {"target": Tokenizer.train(["a thing"], kind="word").to_json()}


def test_missing_annotation_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CaptioningDataModule(train_path=str(tmp_path / "none.json")).load_split("train")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"something": []}))
    with pytest.raises(ValueError, match="COCO"):
        detect_format(bad)
    assert torch.is_tensor(ImageTransform(8)(Image.new("RGB", (3, 300))))


def _declared_png(path, width: int, height: int) -> None:
    """A PNG whose header declares width x height (the pixel data is a tiny stub)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 8))
                     + chunk(b"IEND", b""))


def test_zero_byte_bomb_and_one_pixel_images(tmp_path) -> None:
    import pytest as _pytest
    from PIL import Image as _Image

    from seq2seq_lightning.data.images import ImageLoadError, load_image

    (tmp_path / "empty.jpg").write_bytes(b"")
    with _pytest.raises(ImageLoadError, match="empty.jpg"):
        load_image(tmp_path / "empty.jpg")
    _declared_png(tmp_path / "bomb.png", 30000, 30000)
    with _pytest.raises(ImageLoadError, match="bomb.png.*DecompressionBomb"):
        load_image(tmp_path / "bomb.png")
    _Image.new("L", (1, 1), 200).save(tmp_path / "dot.png")
    dot = load_image(tmp_path / "dot.png")
    assert dot.mode == "RGB" and dot.size == (1, 1) and dot.getpixel((0, 0)) == (200, 200, 200)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric CIDErD")  # the merged metric had no update
def test_evaluation_under_ddp_sees_each_image_once_so_cider_equals_one_process() -> None:
    """Lightning injects its padding ``DistributedSampler`` into the validation loader of each process;
    the shards hold every image exactly once, so CIDEr (whose document frequencies count images) and
    BLEU over the gathered states equal their one-process values."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
    from torchmetrics.text import BLEUScore

    from seq2seq_lightning.data.shapes import ShapesDataModule
    from seq2seq_lightning.metrics.cider import CIDErD

    dm = ShapesDataModule(num_train=16, num_val=7, num_test=7, image_size=16, eval_batch_size=2)

    def loader(rank: int | None) -> DataLoader:
        with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
            plain = dm.val_dataloader()  # as Lightning calls the hook
        if rank is None:
            return plain
        return _update_dataloader(plain, DistributedSampler(plain.dataset, num_replicas=2, rank=rank, shuffle=False))

    def scores(loaders: list[DataLoader]) -> tuple[list[int], float, float]:
        seen, cider, bleu = [], CIDErD(), BLEUScore()
        for each in loaders:
            part = CIDErD()
            for batch in each:
                hyps = [" ".join(refs[0].split()[:-1]) for refs in batch.references]  # near misses
                part.update(hyps, batch.references)
                bleu.update(hyps, batch.references)  # BLEU's states are sums: the order of updates is moot
                seen += batch.index.tolist()
            cider.merge_state(part)  # the concatenation the epoch-end synchronisation does
        return sorted(seen), float(cider.compute()), float(bleu.compute())

    one_seen, one_cider, one_bleu = scores([loader(None)])
    two_seen, two_cider, two_bleu = scores([loader(0), loader(1)])
    assert one_seen == two_seen == list(range(7))
    assert two_cider == pytest.approx(one_cider, rel=1e-12) and two_bleu == pytest.approx(one_bleu, rel=1e-6)
    assert 0 < one_cider < 10 and 0 < one_bleu < 1
