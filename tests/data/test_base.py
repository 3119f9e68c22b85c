"""Seq2SeqDataModule through a minimal third task built on it: setup, tokenizers, loaders, exact resume."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from seq2seq_lightning.data.base import Seq2SeqDataModule
from seq2seq_lightning.data.loader import ResumableDataLoader
from seq2seq_lightning.data.tokenizer import Tokenizer

LETTERS = "abcdefgh"


class ReverseDataset(Dataset):
    def __init__(self, texts: list[str], tokenizer: Tokenizer) -> None:
        self.texts, self.tokenizer = texts, tokenizer

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        tok = self.tokenizer
        ids = tok.encode(self.texts[i])
        return {"index": i, "source": torch.tensor(ids + [tok.eos_id]),
                "target": torch.tensor([tok.bos_id] + ids[::-1] + [tok.eos_id])}


def collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    return {"index": torch.tensor([item["index"] for item in items]),
            "source": pad_sequence([item["source"] for item in items], batch_first=True, padding_value=pad_id),
            "target": pad_sequence([item["target"] for item in items], batch_first=True, padding_value=pad_id)}


class ReverseDataModule(Seq2SeqDataModule):
    """Letter strings -> the same letters reversed, generated from the seed; no lengths, no files."""

    def __init__(self, num_train: int = 40, num_val: int = 0, batch_size: int = 4, seed: int = 0,
                 tokenizers: dict[str, str] | None = None, predict_path: str | None = None) -> None:
        super().__init__(paths={"predict": predict_path}, batch_size=batch_size, eval_batch_size=3, num_workers=0,
                         seed=seed, tokenizers=tokenizers)
        self.sizes = {"train": num_train, "val": num_val, "test": 5}
        self.built: list[str] = []

    def has_split(self, split: str) -> bool:
        return self.sizes.get(split, 0) > 0 or super().has_split(split)

    def texts(self, split: str) -> list[str]:
        if split == "predict":
            return Path(self.paths["predict"]).read_text().splitlines()
        rng = random.Random(f"{self.seed}/{split}")
        return ["".join(rng.choices(LETTERS, k=rng.randint(1, 6))) for _ in range(self.sizes[split])]

    def train_tokenizers(self) -> dict[str, str]:
        return {"target": Tokenizer.train(self.texts("train"), kind="char").to_json()}

    def build_dataset(self, split: str) -> Dataset:
        self.built.append(split)
        return ReverseDataset(self.texts(split), self.target_tokenizer)

    def collate_fn(self, split: str) -> Callable[[list[Any]], Any]:
        return lambda items: collate(items, self.pad_id)


def test_stages_set_up_their_splits_once() -> None:
    dm = ReverseDataModule(num_val=6)
    dm.setup("fit")
    assert dm.built == ["train", "val"] and set(dm.datasets) == {"train", "val"}
    dm.setup("validate")
    dm.setup("test")
    assert dm.built == ["train", "val", "test"]  # cached: each split built once
    assert len(dm.dataset("test")) == 5
    with pytest.raises(ValueError, match="unknown stage 'tune'"):
        dm.setup("tune")
    everything = ReverseDataModule()
    everything.setup()  # every split that has data: no val, no predict input
    assert everything.built == ["train", "test"]


def test_fitting_without_validation_and_missing_splits() -> None:
    dm = ReverseDataModule(num_val=0)
    dm.setup("fit")
    assert "val" not in dm.datasets and dm.val_dataloader() == []
    with pytest.raises(ValueError, match="there is no val data"):
        dm.dataset("val")


def test_tokenizers_are_trained_once_given_or_refused() -> None:
    dm = ReverseDataModule()
    assert dm.state_dict() == {}  # nothing trained yet
    trained = dm.tokenizers
    assert set(trained) == {"target"} and dm.state_dict() == {"tokenizers": trained}
    assert dm.get_tokenizer("target") is dm.target_tokenizer and dm.pad_id == dm.target_tokenizer.pad_id
    given = ReverseDataModule(num_train=0, tokenizers=trained)
    assert given.tokenizers == trained  # no training data needed
    with pytest.raises(ValueError, match="train_path"):
        _ = ReverseDataModule(num_train=0).tokenizers
    with pytest.raises(ValueError, match="single key 'target'"):
        ReverseDataModule(tokenizers={"source": trained["target"]})
    fresh = ReverseDataModule(num_train=0)
    fresh.load_state_dict({"tokenizers": trained})
    assert fresh.tokenizers == trained
    other = ReverseDataModule(seed=1)
    assert other.tokenizers != trained
    with pytest.raises(ValueError, match="differ"):
        other.load_state_dict({"tokenizers": trained})


def test_a_task_must_implement_its_parts() -> None:
    class Incomplete(Seq2SeqDataModule):
        def train_tokenizers(self) -> dict[str, str]:
            return {}

    with pytest.raises(TypeError, match="build_dataset"):
        Incomplete(batch_size=1, eval_batch_size=None, num_workers=0, seed=0, tokenizers=None)
    broken = type("Broken", (ReverseDataModule,), {"train_tokenizers": lambda self: {"source": "{}"}})()
    with pytest.raises(ValueError, match=r"Broken.train_tokenizers returned \['source'\], expected \['target'\]"):
        _ = broken.tokenizers


def test_default_batching_without_lengths(tmp_path: Path) -> None:
    dm = ReverseDataModule(num_train=22, batch_size=4)
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableDataLoader)
    orders = []
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        batches = [batch["index"].tolist() for batch in loader]
        assert all(len(b) <= 4 for b in batches) and sorted(i for b in batches for i in b) == list(range(22))
        orders.append(batches)
    assert orders[0] != orders[1]  # a new order each epoch, a function of (seed, epoch)
    assert orders[1] == [b["index"].tolist() for b in loader]
    test = [batch["index"].tolist() for batch in dm.test_dataloader()]
    assert test == [[0, 1, 2], [3, 4]]  # evaluation: eval_batch_size, in order
    for batch in dm.test_dataloader():
        tok = dm.target_tokenizer
        assert batch["target"][0, 0] == tok.bos_id and (batch["target"] != tok.pad_id).sum() > 0
    (tmp_path / "in.txt").write_text("abc\nh\nfeed\nbad\n")
    predict = ReverseDataModule(num_train=0, tokenizers=dm.tokenizers, predict_path=str(tmp_path / "in.txt"))
    assert [b["index"].tolist() for b in predict.predict_dataloader()] == [[0, 1, 2], [3]]


class _Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch["index"].tolist())
        return (self.weight * batch["source"].float().mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(root: Path, max_steps: int, ckpt_path: str | None = None, every: int | None = None,
         tokenizers: dict[str, str] | None = None) -> tuple[_Recorder, ReverseDataModule]:
    model, dm = _Recorder(), ReverseDataModule(num_train=30, batch_size=4, tokenizers=tokenizers)
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, accelerator="cpu", logger=False, callbacks=callbacks,
                        enable_checkpointing=bool(every), enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=root)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model, dm


def test_resuming_inside_an_epoch_continues_the_same_batches(tmp_path: Path) -> None:
    straight, _ = _fit(tmp_path / "straight", max_steps=20)
    assert len(straight.seen) == 20  # 8 batches an epoch: the run crosses two epoch ends
    first, dm = _fit(tmp_path / "first", max_steps=11, every=11)
    assert first.seen == straight.seen[:11]
    (ckpt,) = (tmp_path / "first").glob("*.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    assert saved["ReverseDataModule"] == {"tokenizers": dm.tokenizers}  # the checkpoint carries them
    resumed, again = _fit(tmp_path / "resumed", max_steps=20, ckpt_path=str(ckpt))
    assert resumed.seen == straight.seen[11:]  # the consumed batches of epoch 1 are skipped, none repeated
    assert again.tokenizers == dm.tokenizers
