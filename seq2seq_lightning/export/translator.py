"""OnnxTranslator: translate with an exported model in ONNX Runtime, searched by any registered strategy.

It does what :meth:`TranslationModule.translate` does, with the encoder graph in place of the encoder
and an :class:`~seq2seq_lightning.export.runtime.OnnxStepDecoder` in place of the decoder: the same
batching (sentences sorted by length, ``batch_size`` per batch), the same length limits
(``max_len_a * source_tokens + max_len_b``), prefixes through
:class:`~seq2seq_lightning.search.prefix.PrefixDecoder`, constraints for strategies that take them, and
the strategies themselves, run unchanged on torch tensors.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.export.runtime import OnnxEncoder, OnnxStepDecoder, load_manifest, make_session
from seq2seq_lightning.search.base import Hypothesis, SearchStrategy
from seq2seq_lightning.search.prefix import PrefixDecoder, forcing_ids, prefix_limits


class OnnxTranslator:
    """Translate with a folder written by ``seq2seq export``.

    Args:
        path: the export folder (or its ``manifest.json``).
        providers: ONNX Runtime execution providers (default: ``["CPUExecutionProvider"]``).
        threads: ONNX Runtime intra-op threads per session (default: ONNX Runtime's choice).

    Attributes:
        manifest: the parsed ``manifest.json``.
        source_tokenizer, target_tokenizer: the exported tokenizers.
        strategy: the configured strategy (built from the manifest's spec).
        encoder: the encoder graph (:class:`~seq2seq_lightning.export.runtime.OnnxEncoder`).
        decoder: the step decoder (:class:`~seq2seq_lightning.export.runtime.OnnxStepDecoder`).
        max_len_a, max_len_b, batch_size: the model's decoding settings, as :class:`TranslationModule`'s.
    """

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        from seq2seq_lightning.building import build

        folder, self.manifest = load_manifest(path)
        self.path: Path = folder
        tokenizers = self.manifest["tokenizers"]
        self.source_tokenizer = Tokenizer.from_json((folder / tokenizers["source"]).read_text(encoding="utf-8"))
        self.target_tokenizer = Tokenizer.from_json((folder / tokenizers["target"]).read_text(encoding="utf-8"))
        names = [t["name"] for t in self.manifest["state"]]
        self.encoder = OnnxEncoder(make_session(folder / self.manifest["encoder"], providers, threads), names)
        self.decoder = OnnxStepDecoder(make_session(folder / self.manifest["decoder_step"], providers, threads),
                                       self.manifest)
        self.strategy: SearchStrategy = build(self.manifest["strategy"], SearchStrategy, what="strategy")
        self.max_len_a = float(self.manifest["max_len_a"])
        self.max_len_b = int(self.manifest["max_len_b"])
        self.batch_size = int(self.manifest["batch_size"])

    # -- strategies ----------------------------------------------------------------------------------
    def build_strategy(self, strategy: SearchStrategy | str | dict | None = None, **kwargs: Any) -> SearchStrategy:
        """As :meth:`Seq2SeqModule.build_strategy`: None keeps the configured strategy with ``kwargs``
        overriding only the arguments they name; a registry name or class path builds that strategy from
        its defaults and ``kwargs``; an instance or spec dict is used as it is."""
        from seq2seq_lightning.building import resolve_strategy

        return resolve_strategy(self.strategy, strategy, **kwargs)

    # -- batches -------------------------------------------------------------------------------------
    def make_batch(self, token_lists: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Token id lists (no specials) -> tokens (B, S) long (EOS appended, padded), lengths (B,) long."""
        tok = self.source_tokenizer
        seqs = [ids + [tok.eos_id] for ids in token_lists]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        tokens = torch.full((len(seqs), int(lengths.max())), tok.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return tokens, lengths

    def max_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) long decoding steps allowed per row, EOS included (as TranslationModule's)."""
        return torch.ceil(self.max_len_a * lengths.float() + self.max_len_b).long().clamp(min=1)

    @torch.no_grad()
    def search(self, tokens: Tensor, lengths: Tensor, strategy: SearchStrategy | None = None, *,
               prefixes: list[list[int]] | None = None,
               constraints: list[list[list[int]]] | None = None) -> list[list[Hypothesis]]:
        """Search one source batch, as :meth:`Seq2SeqModule.search` does.

        Args:
            tokens: (B, S) long source ids (EOS included, padded); lengths: (B,) long.
            strategy: the strategy (default: the configured one).
            prefixes: per row, target ids every output must start with (empty: none).
            constraints: per row, phrases of target ids every output must contain; only for a strategy
                whose ``search`` takes ``constraints`` (``constrained_beam``).
        """
        strategy = strategy or self.strategy
        if constraints is not None and not any(constraints):
            constraints = None
        if constraints is not None and not _takes(type(strategy), "constraints"):
            raise ValueError(f"strategy {type(strategy).__name__} does not take constraints; search inputs with "
                             "constraints with strategy='constrained_beam'")
        tok = self.target_tokenizer
        initial = self.encoder(tokens, lengths)
        limits = self.max_lengths(lengths)
        decoder: Any = self.decoder
        if prefixes is not None and any(prefixes):
            limits = prefix_limits(limits, prefixes)
            decoder = PrefixDecoder(self.decoder)

        def start(rows: list[int]) -> tuple[Any, dict[str, Any]]:
            state: Any = initial if len(rows) == len(limits) else \
                self.decoder.reorder_state(initial, torch.tensor(rows, dtype=torch.long))
            if decoder is not self.decoder:
                state = decoder.wrap(state, [prefixes[i] for i in rows])
            return state, {} if constraints is None else {"constraints": [constraints[i] for i in rows]}

        common = {"bos": tok.bos_id, "eos": tok.eos_id}
        if getattr(strategy, "row_limits", False) and _takes(type(strategy), "max_lens"):
            state, extra = start(list(range(len(limits))))
            return strategy.search(decoder, state, batch_size=len(limits), max_len=int(limits.max()),
                                   max_lens=limits, **common, **extra)
        results: list[list[Hypothesis]] = [[] for _ in range(len(limits))]
        for limit in sorted(set(limits.tolist())):
            rows = [i for i, x in enumerate(limits.tolist()) if x == limit]
            state, extra = start(rows)
            found = strategy.search(decoder, state, batch_size=len(rows), max_len=int(limit), **common, **extra)
            for row, hyps in zip(rows, found):
                results[row] = hyps
        return results

    # -- Python API ----------------------------------------------------------------------------------
    def translate(self, sentences: list[str], strategy: SearchStrategy | str | None = None, *,
                  prefixes: list[str | None] | None = None, constraints: list[list[str] | None] | None = None,
                  **strategy_kwargs: Any) -> list[str]:
        """Translate sentences as :meth:`TranslationModule.translate` does, in ONNX Runtime.

        An empty (or whitespace-only) sentence gives an empty translation.

        Args:
            sentences: the source sentences.
            strategy: None (the configured strategy; ``strategy_kwargs`` override its arguments), a
                registry name (``greedy``, ``beam``, ``sampling``, ``exact``, ``constrained_beam``, a
                plugin's) or class path built with ``strategy_kwargs``, or an instance.
            prefixes: per sentence, target text its translation must start with (None or "": none).
            constraints: per sentence, phrases its translation must contain (None or []: none); needs
                ``strategy="constrained_beam"``.
            strategy_kwargs: the strategy's arguments (``beam_size=4``, ``seed=0``, ...).
        """
        return [self.target_tokenizer.decode(h[0].tokens) if h else ""
                for h in self.translate_hypotheses(sentences, strategy, prefixes=prefixes, constraints=constraints,
                                                   **strategy_kwargs)]

    def translate_hypotheses(self, sentences: list[str], strategy: SearchStrategy | str | None = None, *,
                             prefixes: list[str | None] | None = None,
                             constraints: list[list[str] | None] | None = None,
                             **strategy_kwargs: Any) -> list[list[Hypothesis]]:
        """:meth:`translate`'s hypotheses (best first, with ``log_prob`` and ``score``) instead of strings;
        an empty sentence gets an empty list."""
        search = self.build_strategy(strategy, **strategy_kwargs)
        prefix_ids, phrase_ids = forcing_ids(self.target_tokenizer, len(sentences), prefixes, constraints)
        out: list[list[Hypothesis]] = [[] for _ in sentences]
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        encoded = {i: self.source_tokenizer.encode(sentences[i]) for i in todo}
        todo.sort(key=lambda i: len(encoded[i]))
        for begin in range(0, len(todo), self.batch_size):
            rows = todo[begin : begin + self.batch_size]
            tokens, lengths = self.make_batch([encoded[i] for i in rows])
            found = self.search(tokens, lengths, search,
                                prefixes=[prefix_ids[i] for i in rows] if any(prefix_ids[i] for i in rows) else None,
                                constraints=[phrase_ids[i] for i in rows] if any(phrase_ids[i] for i in rows)
                                else None)
            for i, hyps in zip(rows, found):
                out[i] = hyps
        return out


@functools.cache
def _takes(cls: type, keyword: str) -> bool:
    """Whether a strategy class's ``search`` accepts ``keyword``."""
    return keyword in inspect.signature(cls.search).parameters
