"""The base of every task's LightningDataModule: splits, tokenizers carried in checkpoints, resumable loaders.

A task's DataModule subclasses :class:`Seq2SeqDataModule` and writes only what is its own: how a split
is read and made a dataset, how examples become a batch, and which tokenizers it trains. The base
does the rest the same way for every task: which splits a stage sets up (each built once and
cached), the serialized tokenizers (linked to the model by the CLI and saved in checkpoints), and
training loaders that resume exactly inside an epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader, Dataset

from seq2seq_lightning.data.batching import BucketBatchSampler
from seq2seq_lightning.data.loader import ResumableDataLoader
from seq2seq_lightning.data.tokenizer import Tokenizer

SPLITS = ("train", "val", "test", "predict")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
_SPLIT_STAGE = {"train": "fit", "val": "validate", "test": "test", "predict": "predict"}


class Seq2SeqDataModule(L.LightningDataModule, ABC):
    """What every task's DataModule shares; a new task subclasses it and writes its own parts.

    The base gives:

    - ``setup(stage)``: builds the splits a stage needs ("fit": train and val, "validate": val,
      "test": test, "predict": predict; None: every split :meth:`has_split` says exists), once each,
      into ``datasets``; fitting without val data skips validation. ``dataset(split)`` sets up on demand.
    - ``tokenizers``: the serialized tokenizers, ``{name: json}`` with the names of ``tokenizer_keys``,
      given to the constructor or trained by :meth:`train_tokenizers` on first access. The CLI links
      them to the model; ``state_dict`` carries them in checkpoints, and ``load_state_dict`` takes a
      checkpoint's (or refuses ones that differ from those in use). :meth:`get_tokenizer` builds the
      :class:`Tokenizer` objects once; ``target_tokenizer`` and ``pad_id`` are the target side's.
    - loaders: a :class:`ResumableDataLoader` per split with the subclass's :meth:`collate_fn` and the
      order and batching of :meth:`batching`. The training loader's sampler is set to the trainer's
      epoch, and on resume it skips exactly the batches of that epoch the trainer had consumed.

    A subclass:

    - sets ``tokenizer_keys`` to the tokenizers it uses (default ``("target",)``);
    - declares every constructor argument with its default and a docstring line (the CLI's ``--help``
      and the YAML configs read them) and passes the shared ones to ``super().__init__``;
    - implements :meth:`train_tokenizers`, :meth:`build_dataset` and :meth:`collate_fn`;
    - overrides :meth:`has_split` when a split exists without a path (generated data), and
      :meth:`batching` or ``predict_dataloader`` when its order or prediction input differ.

    A whole task (reversing words), generated from the seed::

        class ReverseDataModule(Seq2SeqDataModule):
            \"\"\"Words -> the words reversed.

            Args:
                num_train: training examples.
                batch_size: examples per training batch.
                seed: seed of the data and of the training order.
                tokenizers: serialized tokenizers ({"source": json, "target": json}).
            \"\"\"

            tokenizer_keys = ("source", "target")

            def __init__(self, num_train: int = 1000, batch_size: int = 32, seed: int = 0,
                         tokenizers: dict[str, str] | None = None) -> None:
                super().__init__(batch_size=batch_size, eval_batch_size=None, num_workers=0, seed=seed,
                                 tokenizers=tokenizers)
                self.num_train = num_train

            def has_split(self, split: str) -> bool:
                return split in ("train", "val", "test") or super().has_split(split)

            def examples(self, split: str) -> list[tuple[str, str]]:
                rng = random.Random(f"{self.seed}/{split}")  # each split its own stream
                n = self.num_train if split == "train" else 100
                words = ["".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(n)]
                return [(w, w[::-1]) for w in words]

            def train_tokenizers(self) -> dict[str, str]:
                sources, targets = zip(*self.examples("train"))
                return {"source": Tokenizer.train(sources, kind="char").to_json(),
                        "target": Tokenizer.train(targets, kind="char").to_json()}

            def build_dataset(self, split: str) -> Dataset:
                return ReverseDataset(self.examples(split), self.get_tokenizer("source"), self.target_tokenizer)

            def collate_fn(self, split: str) -> Callable[[list[Any]], Any]:
                return partial(collate_translation, pad_id=self.pad_id)

    Args:
        paths: split -> the path it is read from ("train", "val", "test", "predict"); splits left out
            have none.
        batch_size: examples per training batch.
        eval_batch_size: examples per validation/test/predict batch; None means batch_size.
        num_workers: DataLoader worker processes.
        seed: seed of the training order (combined with the epoch) and of the workers.
        tokenizers: serialized tokenizers ``{name: json}`` to use instead of training new ones; their
            names must be those of ``tokenizer_keys``.
    """

    tokenizer_keys: ClassVar[tuple[str, ...]] = ("target",)

    def __init__(
        self,
        *,
        paths: Mapping[str, str | None] | None = None,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        seed: int,
        tokenizers: dict[str, str] | None,
    ) -> None:
        super().__init__()
        keys = self.tokenizer_keys
        if tokenizers is not None and set(tokenizers) != set(keys):
            names = " and ".join(repr(key) for key in keys)
            raise ValueError(
                f"tokenizers must have the {'single key' if len(keys) == 1 else 'keys'} {names}, "
                f"got {sorted(tokenizers)}"
            )
        self.paths: dict[str, str | None] = {split: None for split in SPLITS} | dict(paths or {})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers, self.seed = num_workers, seed
        self._tokenizer_json: dict[str, str] | None = dict(tokenizers) if tokenizers is not None else None
        self._tokenizer_objects: dict[str, Tokenizer] | None = None
        self.datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ what a task implements
    def has_split(self, split: str) -> bool:
        """Whether ``split`` ("train", "val", "test", "predict") has data; by default, a path was given."""
        return self.paths[split] is not None

    @abstractmethod
    def train_tokenizers(self) -> dict[str, str]:
        """New tokenizers ``{name: json}`` (the names of ``tokenizer_keys``), trained on the train split."""

    @abstractmethod
    def build_dataset(self, split: str) -> Dataset:
        """The dataset of ``split``; :meth:`setup` calls it once per split and caches the result."""

    @abstractmethod
    def collate_fn(self, split: str) -> Callable[[list[Any]], Any]:
        """What makes a batch of ``split`` from a list of its dataset's items."""

    def batching(self, split: str, dataset: Dataset) -> dict[str, Any]:
        """How ``split`` is ordered and batched, as DataLoader arguments (``batch_sampler``, or
        ``sampler`` and ``batch_size``); the training order must be a function of (seed, epoch) only.

        By default, a :class:`BucketBatchSampler` over ``dataset.lengths`` (all equal where the dataset
        has none): training batches of similar lengths in a random order per (seed, epoch); evaluation
        batches of ``eval_batch_size`` without shuffling. Under DDP Lightning gives the sampler each
        process's shard; evaluation shards are not padded with repeated rows (``even_shards=False``),
        so validation and test metrics count every row once, whatever the number of processes.
        """
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            lengths = [1] * len(dataset)
        training = split == "train"
        size = self.batch_size if training else self.eval_batch_size
        return {"batch_sampler": BucketBatchSampler(lengths, size, shuffle=training, seed=self.seed,
                                                    even_shards=training)}

    # ------------------------------------------------------------------ tokenizers
    @property
    def tokenizers(self) -> dict[str, str]:
        """The serialized tokenizers ``{name: json}``; trained on the training split on first access if not given."""
        if self._tokenizer_json is None:
            if not self.has_split("train"):
                raise ValueError("no tokenizers were given and there is no train_path to train them on")
            trained = dict(self.train_tokenizers())
            if set(trained) != set(self.tokenizer_keys):
                raise ValueError(
                    f"{type(self).__name__}.train_tokenizers returned {sorted(trained)}, "
                    f"expected {sorted(self.tokenizer_keys)}"
                )
            self._tokenizer_json = trained
        return dict(self._tokenizer_json)

    def get_tokenizer(self, name: str) -> Tokenizer:
        """The :class:`Tokenizer` ``name`` of :attr:`tokenizers`, built once (equal ones are one object)."""
        if self._tokenizer_objects is None:
            built: dict[str, Tokenizer] = {}
            objects: dict[str, Tokenizer] = {}
            for key, text in self.tokenizers.items():
                if text not in built:
                    built[text] = Tokenizer.from_json(text)
                objects[key] = built[text]
            self._tokenizer_objects = objects
        return self._tokenizer_objects[name]

    @property
    def target_tokenizer(self) -> Tokenizer:
        return self.get_tokenizer("target")

    @property
    def pad_id(self) -> int:
        return self.target_tokenizer.pad_id

    # ------------------------------------------------------------------ datasets
    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs ("fit": train+val, "validate", "test", "predict";
        None: every split that has data)."""
        if stage is None:
            splits = [split for split in SPLITS if self.has_split(split)]
        elif stage in _STAGE_SPLITS:
            splits = list(_STAGE_SPLITS[stage])
        else:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(_STAGE_SPLITS)}")
        for split in splits:
            if split in self.datasets:
                continue
            if split == "val" and not self.has_split("val"):
                continue  # fitting without validation
            self.datasets[split] = self.build_dataset(split)

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split``, set up on demand."""
        if split not in self.datasets:
            self.setup(_SPLIT_STAGE[split])
        if split not in self.datasets:
            raise ValueError(f"there is no {split} data")
        return self.datasets[split]

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return ResumableDataLoader(
            dataset,
            seed=self.seed,
            collate_fn=self.collate_fn(split),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        batching = self.batching("train", dataset)
        sampler = batching.get("batch_sampler", batching.get("sampler"))
        if self.trainer is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.trainer.current_epoch)
        return self._loader("train", dataset, consumed=self._consumed_batches, **batching)

    def _consumed_batches(self) -> int | None:
        """Batches of the current epoch the attached trainer's loop has consumed (resuming skips them)."""
        trainer = self.trainer
        if trainer is None:
            return None
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        return self._loader(split, dataset, **self.batching(split, dataset))

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.datasets and not self.has_split("val"):
            return []
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"tokenizers": dict(self._tokenizer_json)} if self._tokenizer_json is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("tokenizers")
        if saved is None:
            return
        if self._tokenizer_json is None:
            self._tokenizer_json = dict(saved)
        elif dict(saved) != self._tokenizer_json:
            raise ValueError(
                "the checkpoint's tokenizers differ from the ones this data module uses; "
                "pass the checkpoint's tokenizers (data.tokenizers) instead of training new ones"
            )
