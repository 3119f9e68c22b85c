"""Ensembles: several translation checkpoints decoded as one model, their probabilities averaged.

``Ensemble(paths).translate(sentences, strategy=None, **kwargs)``. At every step the ensemble's next-token
distribution is the mean of the members' distributions, returned as its log (``log (1/M) sum_m p_m``), so
it is a normalised log-probability distribution and every registered strategy searches it as it would a
single model: :class:`EnsembleDecoder` is one :class:`~seq2seq_lightning.search.base.StepDecoder` over the
members' decoders, its state the tuple of their states.

Each member reads the source with its own source tokenizer and encoder; all must share the target
tokenizer (the ids they score), or :class:`EnsembleError` says which differ. Length limits are the largest
any member allows; the strategy is the first member's (``strategy`` and ``kwargs`` as in
:meth:`TranslationModule.translate`), and so is the batch size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy


class EnsembleError(ValueError):
    """Members that cannot be ensembled (different target tokenizers)."""


def mean_log_probs(log_probs: Tensor) -> Tensor:
    """(M, N, V) log-probabilities of M models -> (N, V) log of the mean of their probabilities.

    Computed around each entry's largest member value, so that M identical members give back exactly
    their log-probabilities, and a token every member rules out (-inf) stays -inf.
    """
    top = log_probs.max(dim=0).values  # (N, V)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return top + (log_probs - top).exp().mean(dim=0).log()


class EnsembleDecoder:
    """A :class:`~seq2seq_lightning.search.base.StepDecoder` over several decoders: log of the mean of their
    probabilities. Its state is the tuple of the members' states; ``reorder_state`` reorders each. It exposes
    no attention (``last_attention`` is None: the members' sources may be tokenized differently)."""

    def __init__(self, decoders: Sequence[Any]) -> None:
        self.decoders = list(decoders)
        self.last_attention: Tensor | None = None

    def init_state(self, encoded: Sequence[Any]) -> tuple[Any, ...]:
        """The members' encoder outputs (one each) -> the ensemble's state."""
        return tuple(d.init_state(e) for d, e in zip(self.decoders, encoded, strict=True))

    def step(self, tokens: Tensor, state: tuple[Any, ...]) -> tuple[Tensor, tuple[Any, ...]]:
        """tokens (N,) long -> log-probs (N, V) float32, new state."""
        outs = [d.step(tokens, s) for d, s in zip(self.decoders, state, strict=True)]
        log_probs = torch.stack([lp.float() for lp, _ in outs])  # (M, N, V)
        return mean_log_probs(log_probs), tuple(s for _, s in outs)

    def reorder_state(self, state: tuple[Any, ...], index: Tensor) -> tuple[Any, ...]:
        """New row i = old row index[i], in every member's state."""
        return tuple(d.reorder_state(s, index) for d, s in zip(self.decoders, state, strict=True))


class Ensemble:
    """Translation checkpoints (or loaded modules) that share a target tokenizer, decoded together.

    Args:
        members: checkpoint paths (loaded with ``TranslationModule.load_from_checkpoint``, so with
            ``weights_only=True``) or already loaded modules (quantized ones too), in any mix.
        map_location: where checkpoints are loaded (every member must end up on the same device).
    """

    def __init__(self, members: Sequence[str | os.PathLike | Any], map_location: Any = "cpu") -> None:
        from seq2seq_lightning.modules.translation import TranslationModule

        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        self.names = [os.fspath(m) if isinstance(m, (str, os.PathLike)) else f"member {i} ({type(m).__name__})"
                      for i, m in enumerate(members)]
        self.members = [TranslationModule.load_from_checkpoint(m, map_location=map_location)
                        if isinstance(m, (str, os.PathLike)) else m for m in members]
        first = self.members[0]
        for name, member in zip(self.names[1:], self.members[1:]):
            if member.target_tokenizer != first.target_tokenizer:
                sizes = (first.target_tokenizer.vocab_size, member.target_tokenizer.vocab_size)
                what = f"vocabularies of {sizes[0]} and {sizes[1]} tokens" if sizes[0] != sizes[1] else \
                    f"both of {sizes[0]} tokens, but not the same tokens and ids"
                raise EnsembleError(
                    f"{self.names[0]} and {name} have different target tokenizers ({what}); an ensemble averages "
                    "next-token probabilities, so every member must share the target tokenizer")
        devices = {str(m.device) for m in self.members}
        if len(devices) > 1:
            raise EnsembleError(f"ensemble members are on different devices ({', '.join(sorted(devices))}); "
                                "load them with one map_location")
        self.decoder = EnsembleDecoder([m.decoder for m in self.members])

    @property
    def target_tokenizer(self) -> Any:
        return self.members[0].target_tokenizer

    def __len__(self) -> int:
        return len(self.members)

    def build_strategy(self, strategy: SearchStrategy | str | None = None, **kwargs: Any) -> SearchStrategy:
        """As :meth:`Seq2SeqModule.build_strategy` of the first member."""
        return self.members[0].build_strategy(strategy, **kwargs)

    @torch.no_grad()
    def search(self, token_lists: Sequence[Sequence[list[int]]], strategy: SearchStrategy) -> list[list[Hypothesis]]:
        """One batch: per member, the source id lists of the same rows (no specials) -> hypotheses per row.

        As :meth:`Seq2SeqModule.search`: a strategy with ``row_limits`` searches all rows at once, each with
        its own limit; otherwise rows sharing a limit are searched together.
        """
        from seq2seq_lightning.modules.base import _takes_row_limits

        batches = [m.make_batch(list(ids)) for m, ids in zip(self.members, token_lists, strict=True)]
        encoded = [m.encode(b) for m, b in zip(self.members, batches)]
        limits_t = torch.stack([m.max_lengths(b) for m, b in zip(self.members, batches)]).max(dim=0).values  # (B,)
        tok = self.target_tokenizer
        if _takes_row_limits(type(strategy)):
            n = int(limits_t.numel())
            return strategy.search(self.decoder, self.decoder.init_state(encoded), batch_size=n, bos=tok.bos_id,
                                   eos=tok.eos_id, max_len=int(limits_t.max()), max_lens=limits_t)
        limits = limits_t.tolist()
        results: list[list[Hypothesis]] = [[] for _ in limits]
        for limit in sorted(set(limits)):
            rows = [i for i, x in enumerate(limits) if x == limit]
            index = torch.tensor(rows, device=limits_t.device)
            part = encoded if len(rows) == len(limits) else [e.index_select(index.to(e.memory.device))
                                                              for e in encoded]
            found = strategy.search(self.decoder, self.decoder.init_state(part), batch_size=len(rows),
                                    bos=tok.bos_id, eos=tok.eos_id, max_len=int(limit))
            for row, hyps in zip(rows, found):
                results[row] = hyps
        return results

    def translate(self, sentences: list[str], strategy: SearchStrategy | str | None = None,
                  **strategy_kwargs: Any) -> list[str]:
        """Translate sentences with the ensemble (batched by the first member's ``batch_size``, sorted by its
        source lengths), with the first member's configured strategy or the given one. An empty (or
        whitespace-only) sentence gives an empty translation."""
        search = self.build_strategy(strategy, **strategy_kwargs)
        modes = [m.training for m in self.members]
        for m in self.members:
            m.eval()
        out = [""] * len(sentences)
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        encoded = [{i: m.source_tokenizer.encode(sentences[i]) for i in todo} for m in self.members]
        todo.sort(key=lambda i: len(encoded[0][i]))
        size = self.members[0].batch_size
        try:
            for start in range(0, len(todo), size):
                rows = todo[start : start + size]
                found = self.search([[ids[i] for i in rows] for ids in encoded], search)
                for i, hyps in zip(rows, found):
                    out[i] = self.target_tokenizer.decode(hyps[0].tokens) if hyps else ""
        finally:
            for m, mode in zip(self.members, modes):
                m.train(mode)
        return out
