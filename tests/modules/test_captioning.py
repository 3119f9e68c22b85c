"""CaptioningModule: shared base with translation, metrics, caption(), predict rows, skipped images,
checkpoints that load with weights_only=True."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from seq2seq_lightning import CaptioningModule, TranslationModule
from seq2seq_lightning.callbacks.examples import ExampleCollector
from seq2seq_lightning.callbacks.heatmaps import AttentionPlots
from seq2seq_lightning.callbacks.writer import PredictionWriter
from seq2seq_lightning.data.captioning import CaptioningDataModule, collate_captions
from seq2seq_lightning.data.images import ImageLoadError
from seq2seq_lightning.data.shapes import ShapesDataModule
from seq2seq_lightning.modules.base import Seq2SeqModule

ENCODER = {"class_path": "cnn", "init_args": {"width_mult": 0.125, "projection_size": 32}}
DECODER = {"class_path": "seq2seq_lightning.decoders.rnn.RNNDecoder",
           "init_args": {"embedding_size": 16, "hidden_size": 32}}


def trainer(root: Path, **kw) -> L.Trainer:
    kw.setdefault("max_epochs", 1)
    return L.Trainer(default_root_dir=root, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, **kw)


def make_module(tokenizers: dict[str, str], **kw) -> CaptioningModule:
    torch.manual_seed(0)
    return CaptioningModule(encoder=ENCODER, decoder=DECODER, tokenizers=tokenizers, **kw)


@pytest.fixture(scope="module")
def data() -> ShapesDataModule:
    return ShapesDataModule(num_train=96, num_val=12, num_test=12, image_size=64, batch_size=16, max_shapes=2)


@pytest.fixture(scope="module")
def fitted(data: ShapesDataModule, tmp_path_factory: pytest.TempPathFactory) -> tuple[CaptioningModule, L.Trainer]:
    model = make_module(data.tokenizers, max_len=12)
    pictures = AttentionPlots(num_examples=2)
    t = trainer(tmp_path_factory.mktemp("fit"), max_epochs=2, callbacks=[pictures])
    t.fit(model, datamodule=data)
    return model, t


def test_shares_the_base_module_with_translation() -> None:
    assert issubclass(CaptioningModule, Seq2SeqModule) and issubclass(TranslationModule, Seq2SeqModule)
    for hook in ("search", "forward", "_loss", "_eval_step", "build_strategy", "detokenize"):
        assert hook not in CaptioningModule.__dict__ and hook not in TranslationModule.__dict__


def test_needs_a_caption_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizers"):
        CaptioningModule(encoder=ENCODER)


def test_fit_logs_metrics_and_draws_attention(fitted: tuple[CaptioningModule, L.Trainer]) -> None:
    _, t = fitted
    metrics = t.callback_metrics
    for key in ("train/loss", "val/loss", "val/ppl", "val/bleu4", "val/cider", "train/skipped_images"):
        assert key in metrics, key
    assert 0.0 <= metrics["val/bleu4"].item() <= 100.0 and float(metrics["train/skipped_images"]) == 0
    pictures = next(c for c in t.callbacks if isinstance(c, AttentionPlots))
    names = sorted(str(p.relative_to(t.default_root_dir)) for p in pictures.written)
    assert names == ["attention/epoch=0/0.png", "attention/epoch=0/1.png", "attention/epoch=1/0.png",
                     "attention/epoch=1/1.png"]
    with Image.open(pictures.written[0]) as sheet:
        assert sheet.format == "PNG" and sheet.width > 96 and sheet.height > 96
    example = ExampleCollector.of(t).examples["val"][0]
    assert example["image"].size == (64, 64) and example["grid"] == (2, 2)
    assert example["attention"].shape == (len(example["output_labels"]), 4)
    torch.testing.assert_close(example["attention"].sum(1), torch.ones(len(example["output_labels"])))


def test_test_metrics(fitted: tuple[CaptioningModule, L.Trainer], data: ShapesDataModule) -> None:
    model, t = fitted
    result = t.test(model, datamodule=data, verbose=False)[0]
    for key in ("test/bleu1", "test/bleu2", "test/bleu3", "test/bleu4", "test/cider", "test/loss", "test/ppl"):
        assert key in result, key
    assert 100.0 >= result["test/bleu1"] >= result["test/bleu4"] >= 0.0 and result["test/cider"] >= 0.0
    examples = ExampleCollector.of(t).examples["test"]
    assert examples and examples[0]["source"] == "shapes/test/0"


def photo(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16))
    return rgb.convert(mode)


def test_caption_any_size_and_mode_and_paths(fitted: tuple[CaptioningModule, L.Trainer], tmp_path: Path) -> None:
    model, _ = fitted
    images = [photo((641, 479), "RGB", 0), photo((7, 300), "L", 1), photo((50, 50), "RGBA", 2),
              photo((123, 77), "P", 3), photo((90, 61), "CMYK", 4), photo((33, 65), "I;16", 5)]
    path = tmp_path / "odd.jpg"
    photo((1001, 333), "RGB", 6).save(path)
    inputs = [*images, path, str(path)]
    greedy = model.caption(inputs)
    assert len(greedy) == len(inputs) and all(isinstance(c, str) and c for c in greedy)
    assert greedy[-1] == greedy[-2]
    assert model.caption(inputs, strategy="beam", beam_size=1) == greedy
    assert [model.caption([x])[0] for x in inputs[:3]] == greedy[:3]  # batch composition does not matter
    assert len(model.caption(inputs, strategy="beam", beam_size=3)) == len(inputs)
    (tmp_path / "bad.jpg").write_text("text")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        model.caption([tmp_path / "bad.jpg"])


def test_predict_rows_include_error_rows(fitted: tuple[CaptioningModule, L.Trainer], data: ShapesDataModule,
                                         tmp_path: Path) -> None:
    model, _ = fitted
    photo((40, 40), "RGB", 0).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not a picture")
    photo((64, 20), "L", 1).save(tmp_path / "c.jpg")
    dm = CaptioningDataModule(predict_path=str(tmp_path), image_size=64, tokenizers=data.tokenizers)
    batch = next(iter(dm.predict_dataloader()))
    model.eval()
    rows = model.predict_step(batch, 0)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [Path(r["input"]).name for r in rows] == ["a.png", "b.jpg", "c.jpg"]
    assert rows[1]["output"] == "" and rows[1]["nbest"] == [] and "cannot identify" in rows[1]["error"]
    assert rows[0]["output"] and "error" not in rows[0] and rows[0]["score"] is not None
    json.dumps(rows)  # plain data for the writer


def test_predict_writes_one_line_per_file_in_order(fitted: tuple[CaptioningModule, L.Trainer],
                                                   data: ShapesDataModule, tmp_path: Path) -> None:
    model, _ = fitted
    folder = tmp_path / "in"
    folder.mkdir()
    photo((300, 200), "RGB", 0).save(folder / "b.jpg")
    data_bytes = (folder / "b.jpg").read_bytes()
    (folder / "a_truncated.jpg").write_bytes(data_bytes[: len(data_bytes) // 2])
    photo((20, 90), "RGBA", 1).save(folder / "c.png")
    (folder / "d.jpg").write_text("text")
    dm = CaptioningDataModule(predict_path=str(folder), image_size=64, batch_size=3, tokenizers=data.tokenizers)
    out = tmp_path / "out.txt"
    t = trainer(tmp_path, callbacks=[PredictionWriter(out)])
    t.predict(model, datamodule=dm, return_predictions=False)
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[-1] == ""
    assert lines[0] == "" and lines[3] == "" and lines[1] and lines[2]  # error rows are empty lines
    assert lines[1:3] == model.caption([folder / "b.jpg", folder / "c.png"])


def test_checkpoint_loads_weights_only_with_its_image_transform(fitted: tuple[CaptioningModule, L.Trainer],
                                                                tmp_path: Path) -> None:
    model, t = fitted
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert set(raw["hyper_parameters"]["tokenizers"]) == {"target"}
    assert raw["image_transform"]["size"] == 64
    loaded = CaptioningModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.image_transform == model.image_transform and loaded.image_transform["size"] == 64
    images = [photo((80, 60), "RGB", 7), photo((31, 90), "RGBA", 8)]
    assert loaded.caption(images, strategy="beam", beam_size=2) == model.caption(images, strategy="beam",
                                                                                  beam_size=2)


def test_unreadable_training_images_are_skipped_and_counted(tmp_path: Path) -> None:
    images, annotations = [], []
    for i in range(8):
        name = f"{i}.jpg"
        if i in (2, 5):
            (tmp_path / name).write_bytes(b"\xff\xd8 broken")
        elif i != 7:  # 7 is missing
            photo((30, 20), "RGB", i).save(tmp_path / name)
        images.append({"id": i, "file_name": name})
        annotations.append({"image_id": i, "caption": f"picture number {i % 3}"})
    ann = tmp_path / "captions_all.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations}))
    dm = CaptioningDataModule(train_path=str(ann), val_path=str(ann), image_size=16, batch_size=4)
    model = make_module(dm.tokenizers, max_len=5)
    t = trainer(tmp_path)
    t.fit(model, datamodule=dm)
    assert float(t.callback_metrics["train/skipped_images"]) == 3
    assert float(t.callback_metrics["val/skipped_images"]) == 3
    assert model.skipped_images == 9  # the sanity check's validation pass met the three too
    # a batch with no readable image is skipped, not a crash
    empty = collate_captions([dm.dataset("train")[2], dm.dataset("train")[5]], pad_id=0)
    model.trainer = None  # called outside a loop
    assert model.training_step(empty, 0) is None
    assert model.skipped_batches == 1


def test_idle_loss_is_zero_and_reaches_every_parameter(data: ShapesDataModule) -> None:
    """What a DDP process whose batch had no readable image backpropagates: every parameter gets a zero
    gradient, so the all-reduce of every parameter runs and the others' gradients are unchanged but averaged."""
    model = make_module(data.tokenizers)
    loss = model.idle_loss()
    assert loss.item() == 0.0
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and not p.grad.any() for p in params)
