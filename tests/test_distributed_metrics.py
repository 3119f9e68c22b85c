"""Validation and test metrics under DDP equal one process's (every row evaluated exactly once), and a
captioning fit survives a process whose batch has no readable image: two CPU processes (gloo) driven
through the CLI in subprocesses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.test_cli import CONFIG, ROOT, last_ckpt, seq2seq, seq2seq_together

CAPTIONING = ROOT / "configs" / "captioning" / "shapes.yaml"
CSV_LOGGER = "--trainer.logger=lightning.pytorch.loggers.CSVLogger"
DATES = ["--data.init_args.num_train=3000", "--model.init_args.encoder.init_args.hidden_size=32",
         "--model.init_args.decoder.init_args.hidden_size=32", "--trainer.enable_model_summary=false",
         "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dates model (94 steps: test BLEU about 20, exact match about 0.13, so both can move)."""
    run = tmp_path_factory.mktemp("dates")
    seq2seq("fit", "-c", str(CONFIG), *DATES, "--data.init_args.num_val=20", "--trainer.max_epochs=2",
            "--trainer.logger=false", f"--trainer.default_root_dir={run}")
    return run


def logged(root: Path) -> dict[str, float]:
    """The last value of every metric a CSVLogger wrote under ``root``."""
    (path,) = root.rglob("metrics.csv")
    with open(path, encoding="utf-8") as handle:
        return {k: float(v) for row in csv.DictReader(handle) for k, v in row.items() if v}


def on_one_and_two_processes(*args: str, root: Path) -> dict[int, dict[str, float]]:
    """``seq2seq ARGS`` on one process and on two DDP processes, started together; the metrics each logged."""
    runs = ((1, "auto"), (2, "ddp"))
    seq2seq_together(*([*args, "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
                        f"--trainer.strategy={strategy}", CSV_LOGGER,
                        f"--trainer.logger.init_args.save_dir={root / f'devices={devices}'}",
                        f"--trainer.default_root_dir={root / f'devices={devices}'}"] for devices, strategy in runs))
    metrics = {}
    for devices, _ in runs:
        metrics[devices] = logged(root / f"devices={devices}")
        print(f"{devices} process(es):", {k: round(v, 7) for k, v in sorted(metrics[devices].items())})
    return metrics


def test_ddp_test_metrics_equal_single_process(dates_run: Path, tmp_path: Path) -> None:
    """101 test rows: Lightning's sampler would pad two processes' shards to 51 each by repeating a row;
    evaluation shards hold each row once (51 and 50, in 6 and 5 batches), so every metric is the one
    process's, up to float summation order."""
    metrics = on_one_and_two_processes(
        "test", "-c", str(CONFIG), *DATES, "--ckpt_path", str(last_ckpt(dates_run)),
        "--data.init_args.num_test=101", "--data.init_args.eval_batch_size=10", root=tmp_path)
    one, two = metrics[1], metrics[2]
    assert one["test/bleu"] > 0 and one["test/exact_match"] > 0
    assert two["test/bleu"] == pytest.approx(one["test/bleu"], abs=1e-4)  # the same outputs: the same n-grams
    assert two["test/exact_match"] == pytest.approx(one["test/exact_match"], abs=1e-6)
    for name in ("test/loss", "test/ppl", "test/token_accuracy"):
        assert two[name] == pytest.approx(one[name], rel=1e-5), name


def caption_files(root: Path) -> tuple[Path, Path]:
    """A COCO-style training file of 8 images, one of them unreadable, and a test file of 7 images."""
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (250, 250, 250)}
    names = list(colours)

    def write(split: str, count: int, broken: set[int]) -> Path:
        images, annotations = [], []
        for i in range(count):
            name = f"{split}{i}.png"
            colour = names[i % len(names)]
            if i in broken:
                (root / name).write_bytes(b"\x89PNG broken")
            else:
                size = (24 + 4 * (i % 3), 20)
                Image.new("RGB", size, colours[colour]).save(root / name)
            images.append({"id": i, "file_name": name})
            annotations += [{"id": 10 * i + k, "image_id": i, "caption": text}
                            for k, text in enumerate((f"a {colour} picture", f"a plain {colour} image"))]
        path = root / f"captions_{split}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
        return path

    return write("train", 8, broken={5}), write("test", 7, broken=set())


CAPTION_DATA = ["--data=seq2seq_lightning.data.captioning.CaptioningDataModule", "--data.init_args.image_size=64",
                "--data.init_args.mean=[0.5,0.5,0.5]", "--data.init_args.std=[0.25,0.25,0.25]"]
CAPTION_MODEL = ["--model.init_args.encoder.init_args.width_mult=0.125",
                 "--model.init_args.encoder.init_args.projection_size=16",
                 "--model.init_args.decoder.init_args.hidden_size=16", "--model.init_args.max_len=6",
                 "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"]


def test_ddp_captioning_fit_survives_a_batch_without_readable_images(tmp_path: Path) -> None:
    """Two processes, one image per batch, one image unreadable: at one step one process has nothing to
    compute on. It returns a zero loss over every parameter, so DDP's gradient all-reduce stays in step
    and the fit ends; the skipped batch is counted over both processes. Then the test metrics on 7
    images (BLEU, CIDEr with its document frequencies, loss) equal one process's."""
    train, test = caption_files(tmp_path)
    run = tmp_path / "fit"
    seq2seq("fit", "-c", str(CAPTIONING), *CAPTION_DATA, f"--data.init_args.train_path={train}",
            f"--data.init_args.val_path={test}", "--data.init_args.batch_size=1", "--data.init_args.eval_batch_size=2",
            *CAPTION_MODEL, "--trainer.max_epochs=2", "--trainer.num_sanity_val_steps=0",
            "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", CSV_LOGGER,
            f"--trainer.logger.init_args.save_dir={run}", f"--trainer.default_root_dir={run}")
    fit = logged(run)
    assert fit["train/skipped_batches"] == 1 and fit["train/skipped_images"] == 1  # last epoch, both processes
    assert fit["val/skipped_batches"] == 0
    ckpt = last_ckpt(run)
    metrics = on_one_and_two_processes(
        "test", "-c", str(CAPTIONING), *CAPTION_DATA, f"--data.init_args.train_path={train}",
        f"--data.init_args.test_path={test}", "--data.init_args.eval_batch_size=2", *CAPTION_MODEL,
        "--ckpt_path", str(ckpt), root=tmp_path / "test")
    one, two = metrics[1], metrics[2]
    for name in ("test/bleu1", "test/bleu4", "test/cider"):
        assert two[name] == pytest.approx(one[name], abs=1e-5), name
    for name in ("test/loss", "test/ppl", "test/token_accuracy"):
        assert two[name] == pytest.approx(one[name], rel=1e-5), name
