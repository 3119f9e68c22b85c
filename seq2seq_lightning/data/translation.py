"""Parallel text as padded batches: the translation LightningDataModule.

A split is given by a path of one of two forms:

- a TSV file ``source<TAB>target`` per line, named ``*.tsv`` or ``*.tsv.gz``;
- a pattern containing ``{lang}``, formatted with ``source_lang`` and ``target_lang`` to name two
  line-aligned files, e.g. ``data/train.{lang}.gz`` -> ``data/train.de.gz`` and ``data/train.en.gz``.

The predict input is plain lines (or, for a ``{lang}`` pattern, the source-language file): every line
gets one row, empty lines included, so a writer can emit exactly one result per input line. It is
streamed (:mod:`seq2seq_lightning.data.predict_stream`): memory does not grow with the input's size.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from seq2seq_lightning.data.base import Seq2SeqDataModule
from seq2seq_lightning.data.batching import collate_translation
from seq2seq_lightning.data.pairs import PairLoader, TextPairStream, warn_errors
from seq2seq_lightning.data.predict_stream import LineStream, PredictLoader, StreamingPredictDataset
from seq2seq_lightning.data.text import filter_pairs, read_parallel, read_tsv
from seq2seq_lightning.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

_ENCODE_CHUNK = 10_000


class RaggedIds:
    """Many token-id sequences in one flat int32 tensor plus offsets (compact, cheap to share)."""

    def __init__(self, flat: torch.Tensor, offsets: torch.Tensor) -> None:
        self.flat = flat  # (total,) int32
        self.offsets = offsets  # (n + 1,) long

    @classmethod
    def encode(
        cls,
        tokenizer: Tokenizer,
        texts: Sequence[str],
        prefix: Sequence[int],
        suffix: Sequence[int],
        max_len: int | None,
    ) -> tuple[RaggedIds, list[int]]:
        """Encode ``texts`` as ``prefix + ids[:max_len] + suffix``; also return the untruncated lengths."""
        flat, offsets, raw_lengths = array("i"), array("q", [0]), []
        for start in range(0, len(texts), _ENCODE_CHUNK):
            for ids in tokenizer.encode_batch(texts[start : start + _ENCODE_CHUNK]):
                raw_lengths.append(len(ids))
                flat.extend(prefix)
                flat.extend(ids if max_len is None else ids[:max_len])
                flat.extend(suffix)
                offsets.append(len(flat))
        flat_tensor = (
            torch.tensor(flat, dtype=torch.int32) if len(flat) else torch.zeros(0, dtype=torch.int32)
        )
        return cls(flat_tensor, torch.tensor(offsets, dtype=torch.long)), raw_lengths

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.flat[self.offsets[i] : self.offsets[i + 1]].long()

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]  # (n,)


class TranslationDataset(Dataset):
    """Rows ``rows`` of a tokenized split; item ``i`` is the dict :func:`collate_translation` takes."""

    def __init__(
        self,
        source: RaggedIds,
        target: RaggedIds | None,
        source_texts: Sequence[str],
        target_texts: Sequence[str] | None,
        rows: Sequence[int] | None = None,
    ) -> None:
        self.source, self.target = source, target
        self.source_texts, self.target_texts = source_texts, target_texts
        self.rows = list(range(len(source))) if rows is None else list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return {
            "index": row,
            "source": self.source[row],
            "target": None if self.target is None else self.target[row],
            "source_text": self.source_texts[row],
            "target_text": "" if self.target_texts is None else self.target_texts[row],
        }

    @property
    def lengths(self) -> list[int]:
        """Per item, the longer of its source and target id sequences (the bucketing key)."""
        rows = torch.as_tensor(self.rows, dtype=torch.long)
        lengths = self.source.lengths()[rows]
        if self.target is not None:
            lengths = torch.maximum(lengths, self.target.lengths()[rows])
        return lengths.tolist()


class TranslationDataModule(Seq2SeqDataModule):
    """Parallel text from TSV or line-aligned files, tokenized and batched by length.

    Batches are :class:`~seq2seq_lightning.data.batch.TextBatch`: ``source`` (B, S) and ``target`` (B, T) long tensors padded with ``<pad>``
    (source = tokens + EOS, target = BOS + tokens + EOS, target None when predicting), their
    ``source_lengths``/``target_lengths`` (B,), ``index`` (B,) (row in the split or input file),
    and the raw ``source_text``/``target_text`` strings.

    Args:
        train_path: training pairs: a ``.tsv``/``.tsv.gz`` file or a ``{lang}`` pattern naming two
            line-aligned files. Also what new tokenizers are trained on.
        val_path: validation pairs, same forms as train_path. Without it, fitting skips validation.
        test_path: test pairs, same forms as train_path.
        predict_path: input to translate: one source per line (BOM, CRLF, invalid UTF-8 tolerated; empty
            lines kept), or a ``{lang}`` pattern whose source-language file is read. A ``.jsonl`` file
            holds one JSON object per line: "source" (string), optionally "prefix" (target text every
            output starts with) and "constraints" (phrases every output contains; constrained_beam);
            a malformed line gets an empty output with an "error". For ``seq2seq score``:
            the pairs to score, ``source<TAB>target`` lines or JSON lines with "source" and "target".
        source_lang: what ``{lang}`` becomes for the source side.
        target_lang: what ``{lang}`` becomes for the target side.
        tokenizer: kind of tokenizer to train: "char", "word" or "bpe".
        vocab_size: largest vocabulary of a trained tokenizer, special tokens included.
        shared_vocab: train one tokenizer on both sides and use it for source and target.
        lowercase: lowercase text inside the trained tokenizers.
        batch_size: examples per training batch.
        eval_batch_size: examples per validation/test/predict batch; None means batch_size.
        max_source_len: most source tokens (EOS not counted). Longer training pairs are skipped and
            counted; longer validation/test/predict sources are truncated, with a counted warning.
        max_target_len: most target tokens (BOS/EOS not counted), with the same rules as max_source_len.
        max_skipped_fraction: the largest share of training pairs that may be skipped (empty or too
            long) before the data is judged broken and fit stops with an error.
        num_workers: DataLoader worker processes.
        seed: seed of the training batch order (combined with the epoch).
        tokenizers: serialized tokenizers ({"source": json, "target": json}) to use instead of
            training new ones; filled from a checkpoint when resuming or predicting.
    """

    tokenizer_keys = ("source", "target")

    def __init__(
        self,
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        source_lang: str = "src",
        target_lang: str = "tgt",
        tokenizer: str = "bpe",
        vocab_size: int = 8000,
        shared_vocab: bool = False,
        lowercase: bool = False,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        max_source_len: int = 200,
        max_target_len: int = 200,
        max_skipped_fraction: float = 0.2,
        num_workers: int = 0,
        seed: int = 0,
        tokenizers: dict[str, str] | None = None,
    ) -> None:
        if tokenizer not in ("char", "word", "bpe"):
            raise ValueError(f"unknown tokenizer kind {tokenizer!r}; valid kinds: char, word, bpe")
        super().__init__(
            paths={"train": train_path, "val": val_path, "test": test_path, "predict": predict_path},
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            tokenizers=tokenizers,
        )
        self.source_lang, self.target_lang = source_lang, target_lang
        self.tokenizer_kind, self.vocab_size = tokenizer, vocab_size
        self.shared_vocab, self.lowercase = shared_vocab, lowercase
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        if not 0.0 <= max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must be within [0, 1], got {max_skipped_fraction}")
        self.max_skipped_fraction = max_skipped_fraction
        self._pairs: dict[str, list[tuple[str, str]]] = {}
        self.skipped: dict[str, dict[str, int]] = {}  # split -> reason -> count (training pairs)
        self.truncated: dict[str, int] = {}  # split -> rows whose ids were truncated
        self.malformed = 0  # malformed lines of the last predict input read
        self.scoring = False  # predict_path holds pairs to score (set by `seq2seq score`, data.pairs.reading_pairs)

    # ------------------------------------------------------------------ reading
    def load_pairs(self, split: str) -> list[tuple[str, str]]:
        """Raw (source, target) pairs of ``split`` ("train", "val" or "test"), read once and cached."""
        if split not in self._pairs:
            self._pairs[split] = self._read_pairs(split)
        return self._pairs[split]

    def _read_pairs(self, split: str) -> list[tuple[str, str]]:
        path = self.paths[split]
        if path is None:
            raise ValueError(f"no {split}_path was given")
        if "{lang}" in path:
            return read_parallel(
                path.replace("{lang}", self.source_lang), path.replace("{lang}", self.target_lang)
            )
        if path.endswith((".tsv", ".tsv.gz")):
            return read_tsv(path)
        raise ValueError(
            f"{split}_path {path!r} is neither a .tsv/.tsv.gz file nor a pattern containing '{{lang}}'"
        )

    def predict_file(self) -> str:
        """The file the predict inputs are read from (a ``{lang}`` pattern names the source side)."""
        path = self.paths["predict"]
        if path is None:
            raise ValueError("no predict_path was given")
        return path.replace("{lang}", self.source_lang)

    # ------------------------------------------------------------------ tokenizers
    def train_tokenizers(self) -> dict[str, str]:
        """``{"source": json, "target": json}`` trained on the training pairs (one shared with shared_vocab)."""
        pairs = self.load_pairs("train")
        options = {"kind": self.tokenizer_kind, "vocab_size": self.vocab_size, "lowercase": self.lowercase}
        sources = [source for source, _ in pairs]
        targets = [target for _, target in pairs]
        if self.shared_vocab:
            shared = Tokenizer.train(sources + targets, **options).to_json()
            result = {"source": shared, "target": shared}
        else:
            result = {
                "source": Tokenizer.train(sources, **options).to_json(),
                "target": Tokenizer.train(targets, **options).to_json(),
            }
        log.info("trained %s tokenizers on %d training pairs", self.tokenizer_kind, len(pairs))
        return result

    @property
    def source_tokenizer(self) -> Tokenizer:
        return self.get_tokenizer("source")

    # ------------------------------------------------------------------ datasets
    def build_dataset(self, split: str) -> TranslationDataset | LineStream:
        """Tokenized pairs of ``split``; for "predict", a stream of ready batches of the input lines
        (while ``scoring``, of the pairs to score: :mod:`seq2seq_lightning.data.pairs`)."""
        if split != "predict":
            return self._build_pairs(split)
        return self._build_scored_pairs() if self.scoring else self._build_predict()

    def _build_scored_pairs(self) -> TextPairStream:
        """The pair file to score (TSV or JSON lines) as a stream; sources are cut as predict cuts them."""
        path = self.paths["predict"]
        if path is None:
            raise ValueError("no predict_path was given (the pairs to score)")
        if "{lang}" in path:
            raise ValueError(f"predict_path {path!r}: pairs to score are one TSV or JSON-lines file, not a "
                             "{lang} pattern")
        return TextPairStream(path, self.source_tokenizer, self.target_tokenizer, batch_size=self.eval_batch_size,
                              max_source_len=self.max_source_len, pad_id=self.pad_id)

    def _build_pairs(self, split: str) -> TranslationDataset:
        pairs = self.load_pairs(split)
        sources = [source for source, _ in pairs]
        targets = [target for _, target in pairs]
        src_tok, tgt_tok = self.source_tokenizer, self.target_tokenizer
        training = split == "train"
        # Training pairs over the limits are skipped, so their ids need no truncation.
        source_ids, source_lengths = RaggedIds.encode(
            src_tok, sources, [], [src_tok.eos_id], None if training else self.max_source_len
        )
        target_ids, target_lengths = RaggedIds.encode(
            tgt_tok, targets, [tgt_tok.bos_id], [tgt_tok.eos_id], None if training else self.max_target_len
        )
        rows: list[int] | None = None
        if training:
            result = filter_pairs(
                pairs,
                self.max_source_len,
                self.max_target_len,
                lengths=list(zip(source_lengths, target_lengths)),
                name="training",
            )
            rows, self.skipped[split] = result.indices, result.skipped
            bad = sum(result.skipped.values())
            if not rows or bad > self.max_skipped_fraction * len(pairs):
                raise ValueError(
                    f"{bad} of {len(pairs)} training pairs in {self.paths[split] or 'the training data'} are bad "
                    f"({', '.join(f'{k}: {v}' for k, v in result.skipped.items())}), more than "
                    f"max_skipped_fraction={self.max_skipped_fraction}; fix the data or raise the limit"
                )
        else:
            truncated = sum(
                s > self.max_source_len or t > self.max_target_len
                for s, t in zip(source_lengths, target_lengths)
            )
            self._note_truncation(split, truncated, len(pairs))
        return TranslationDataset(source_ids, target_ids, sources, targets, rows)

    def _build_predict(self) -> StreamingPredictDataset:
        """The predict input as a stream; nothing is read yet (a missing file is an error now).

        Truncation is counted while the stream is read: ``truncated["predict"]`` is set, with one
        warning, when an iteration of :meth:`predict_dataloader` ends.
        """
        return StreamingPredictDataset(
            self.predict_file(),
            self.source_tokenizer,
            batch_size=self.eval_batch_size,
            max_source_len=self.max_source_len,
            pad_id=self.pad_id,
            target_tokenizer=self.target_tokenizer,  # prefixes and constraints of JSON-lines input
        )

    def _note_malformed(self, path: str, count: int, total: int) -> None:
        """The one warning for the malformed lines of a predict input (each has an error row)."""
        self.malformed = count
        if count:
            log.warning("%d of %d predict input lines of %s are malformed; each has an empty output with an "
                        "\"error\" in place", count, total, path)

    def _note_truncation(self, split: str, count: int, total: int) -> None:
        self.truncated[split] = count
        if count:
            log.warning(
                "truncated %d of %d %s inputs to max_source_len=%d / max_target_len=%d tokens",
                count,
                total,
                split,
                self.max_source_len,
                self.max_target_len,
            )

    # ------------------------------------------------------------------ loaders
    def collate_fn(self, split: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return partial(collate_translation, pad_id=self.pad_id)

    def predict_dataloader(self) -> DataLoader:
        # Streamed, length-sorted within chunks; every batch carries "index" and the writer restores
        # input order. Under DDP each process predicts its own share of the lines.
        dataset = self.dataset("predict")
        assert isinstance(dataset, LineStream)
        if self.trainer is not None:
            dataset.rank, dataset.world_size = self.trainer.global_rank, self.trainer.world_size
        if isinstance(dataset, TextPairStream):
            return PairLoader(
                dataset,
                on_end=lambda truncated, rows: self._note_truncation("predict", truncated, rows),
                on_errors=lambda malformed, errors, rows: warn_errors(dataset.path, malformed, errors, rows),
                num_workers=self.num_workers,
            )
        return PredictLoader(
            dataset,
            on_end=lambda truncated, rows: self._note_truncation("predict", truncated, rows),
            on_malformed=lambda bad, rows: self._note_malformed(dataset.path, bad, rows),
            num_workers=self.num_workers,
        )
