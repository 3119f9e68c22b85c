"""TranslationModule: a text encoder, the conditional LM decoder and a search strategy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.text import SacreBLEUScore

from seq2seq_lightning.analysis.scoring import score_texts
from seq2seq_lightning.data.batch import TextBatch
from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.decoders.base import Decoder
from seq2seq_lightning.encoders.base import Encoder, EncoderOutput
from seq2seq_lightning.modules.base import Seq2SeqModule
from seq2seq_lightning.search.base import SearchStrategy
from seq2seq_lightning.search.prefix import forcing_ids


class TranslationModule(Seq2SeqModule):
    """Machine translation: source text -> target text.

    Args:
        encoder: the text encoder (a registry name such as ``rnn`` or ``transformer``, or a class path,
            with ``init_args``); the module passes the source vocabulary size. Default: the built-in ``rnn``.
        decoder: the conditional LM (a registry name such as ``rnn``, or a class path, with
            ``init_args``); the module passes the target vocabulary size and the encoder's output
            size. Default: the built-in ``rnn`` with its defaults.
        strategy: how outputs are searched in validation, test, predict and ``translate``
            (``greedy``, ``beam``, ``sampling`` or a plugin's name).
        tokenizers: serialized source and target tokenizers (``{"source": json, "target": json}``);
            linked from the data module on the command line and stored in every checkpoint.
        label_smoothing: label smoothing of the training cross-entropy (padding is ignored).
        max_len_a: decoding may run for ``max_len_a * source_tokens + max_len_b`` steps.
        max_len_b: see ``max_len_a``.
        batch_size: sentences per batch inside :meth:`translate`.
        optimizer: the optimizer, called with the parameters (default: Adam, lr 1e-3).
        lr_scheduler: an optional learning-rate scheduler, called with the optimizer;
            ``ReduceLROnPlateau`` watches ``val/loss``.
        num_examples: example translations kept from validation and test and printed at the end
            of fit and test.
    """

    decoding_settings = Seq2SeqModule.decoding_settings | {"max_len_a", "max_len_b", "batch_size"}

    def __init__(
        self,
        encoder: Callable[[int], Encoder] | None = None,
        decoder: Callable[[int, int], Decoder] | None = None,
        strategy: SearchStrategy | None = None,
        tokenizers: dict[str, str] | None = None,
        label_smoothing: float = 0.1,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        batch_size: int = 64,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_examples: int = 5,
    ) -> None:
        if not tokenizers or "source" not in tokenizers or "target" not in tokenizers:
            raise ValueError("TranslationModule needs tokenizers={'source': json, 'target': json} "
                             "(the data module provides them; checkpoints carry them)")
        source_tok = Tokenizer.from_json(tokenizers["source"])
        target_tok = Tokenizer.from_json(tokenizers["target"])
        encoder_module = self.build_encoder("rnn" if encoder is None else encoder, source_tok.vocab_size)
        super().__init__(encoder_module, decoder, strategy, target_tok, label_smoothing, optimizer, lr_scheduler,
                         num_examples)
        self.save_hyperparameters()
        self.source_tokenizer = source_tok
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.batch_size = batch_size
        self.bleu = torch.nn.ModuleDict({s: SacreBLEUScore(tokenize="13a") for s in ("val", "test")})
        self.exact = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

    # -- hooks ---------------------------------------------------------------------------------
    def encode(self, batch: TextBatch) -> EncoderOutput:
        return self.encoder(batch.source, batch.source_lengths)

    def max_lengths(self, batch: TextBatch) -> Tensor:
        lengths = batch.source_lengths.float()
        return torch.ceil(self.max_len_a * lengths + self.max_len_b).long().clamp(min=1)

    def update_metrics(self, stage: str, hyps: list[str], batch: TextBatch) -> None:
        refs = list(batch.target_text)
        self.bleu[stage].update(hyps, [[r] for r in refs])
        matches = torch.tensor([float(h == r) for h, r in zip(hyps, refs)], device=self.device)
        self.exact[stage].update(matches)

    def metrics_for(self, stage: str) -> list[Metric]:
        extra = [self.bleu[stage], self.exact[stage]] if stage in self.bleu else []
        return super().metrics_for(stage) + extra

    def log_metrics(self, stage: str) -> None:
        self.log(f"{stage}/bleu", self.bleu[stage].compute() * 100.0)
        if stage == "test":
            self.log("test/exact_match", self.exact[stage].compute())

    def example_extras(self, batch: TextBatch, i: int) -> dict[str, Any]:
        n = int(batch.source_lengths[i])
        ids = batch.source[i, :n].tolist()
        return {"source_labels": [self.source_tokenizer.id_to_token(t) or "?" for t in ids]}

    # -- Python API ----------------------------------------------------------------------------
    def translate(self, sentences: list[str], strategy: SearchStrategy | str | None = None, *,
                  prefixes: list[str | None] | None = None, constraints: list[list[str] | None] | None = None,
                  **strategy_kwargs: Any) -> list[str]:
        """Translate sentences (batched internally) with the configured or the given strategy.

        An empty (or whitespace-only) sentence gives an empty translation.

        Args:
            prefixes: per sentence, target text its translation must start with (None or "": none);
                the translation includes it. Works with every strategy.
            constraints: per sentence, phrases its translation must contain (None or []: none);
                needs a strategy that takes constraints: ``strategy="constrained_beam"``.
        """
        search = self.build_strategy(strategy, **strategy_kwargs)
        prefix_ids, phrase_ids = forcing_ids(self.target_tokenizer, len(sentences), prefixes, constraints)
        was_training = self.training
        self.eval()
        out = [""] * len(sentences)
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        encoded = {i: self.source_tokenizer.encode(sentences[i]) for i in todo}
        todo.sort(key=lambda i: len(encoded[i]))
        try:
            for start in range(0, len(todo), self.batch_size):
                rows = todo[start : start + self.batch_size]
                batch = self.make_batch([encoded[i] for i in rows])
                if any(prefix_ids[i] for i in rows):
                    batch.prefix = [prefix_ids[i] for i in rows]
                if any(phrase_ids[i] for i in rows):
                    batch.constraints = [phrase_ids[i] for i in rows]
                for i, hyps in zip(rows, self.search(batch, search)):
                    out[i] = self.target_tokenizer.decode(hyps[0].tokens) if hyps else ""
        finally:
            self.train(was_training)
        return out

    def score(self, sources: list[str], targets: list[str]) -> list[float]:
        """The model's log-probability of each target given its source (forced decoding), batched
        internally like :meth:`translate` and returned in input order.

        A score is the sum of log P of the target's tokens and of the EOS ending it (an empty target:
        the EOS alone). It is the score of the target *as the target tokenizer encodes it*: text the
        tokenizer cannot represent exactly (unknown characters, case a lowercasing tokenizer drops) is
        scored as its tokenization. The score of a translation equals its search's ``log_prob``.
        Per-token scores: :func:`~seq2seq_lightning.analysis.scoring.score_texts`.
        """
        encoded = [self.source_tokenizer.encode(s) for s in sources]
        scores = score_texts(self, encoded, targets, self.make_batch, self.batch_size, [len(ids) for ids in encoded])
        return [s.log_prob for s in scores]

    def make_batch(self, token_lists: list[list[int]]) -> TextBatch:
        """Token id lists (no specials) -> a padded source batch on the module's device."""
        tok = self.source_tokenizer
        seqs = [ids + [tok.eos_id] for ids in token_lists]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        source = torch.full((len(seqs), int(lengths.max())), tok.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            source[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return TextBatch(source=source.to(self.device), source_lengths=lengths.to(self.device),
                         index=torch.arange(len(seqs), device=self.device))

