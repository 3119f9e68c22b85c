"""Lexically constrained beam search: every given phrase must appear in the output.

Dynamic beam allocation, after Post & Vilar, "Fast Lexically Constrained Decoding with Dynamic Beam
Allocation for Neural Machine Translation" (NAACL 2018). Each step, the candidates of a row are the
best continuations of the whole beam, each hypothesis' next constraint token (one per unmet phrase)
and each hypothesis' own best token; the beam is divided into banks by how many constraint tokens a
candidate has met, each bank keeps its best candidates, and a hypothesis may end (EOS) only once
every phrase is in it. Built on :class:`~seq2seq_lightning.search.beam.BeamSearch` through its hooks.

Progress on a phrase is the longest end of the hypothesis that is a start of the phrase, so a phrase
begun and then abandoned loses its progress (and the hypothesis falls back to a lower bank); a phrase
counts as met once it occurs anywhere in the hypothesis, phrases may occur in any order, and tokens
of a forced prefix (:mod:`seq2seq_lightning.search.prefix`) count like generated ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, StepDecoder
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.functional import NEG_INF, beam_candidates, infer_device, pick_beams
from seq2seq_lightning.search.pool import NBestPool

__all__ = ["ConstrainedBeamSearch", "ConstraintPool", "PhraseSet", "allocate_banks", "phrases_found",
           "suffix_progress", "unmet_constraints"]

#: what one row's constraints are: phrases, each a list of target token ids (no BOS, no EOS)
RowConstraints = Sequence[Sequence[int]]


# ---- pure functions ----------------------------------------------------------------------------------

def phrases_found(tokens: Tensor, phrases: Tensor, phrase_len: Tensor) -> Tensor:
    """Which phrases occur in each token sequence.

    tokens (*D, T) long (-1 where there is no token), phrases (*D, C, L) long and phrase_len (*D, C)
    long (leading dims broadcastable to D; positions past a phrase's length are ignored) ->
    (*D, C) bool. A phrase of length 0 (a padding slot) counts as found.
    """
    L, T = phrases.size(-1), tokens.size(-1)
    absent = phrase_len == 0
    if T == 0 or L == 0:
        return absent.expand(*tokens.shape[:-1], phrase_len.size(-1)).clone()
    padded = torch.cat([tokens, tokens.new_full((*tokens.shape[:-1], L - 1), -1)], -1)  # (*D, T + L - 1)
    windows = padded.unfold(-1, L, 1).unsqueeze(-3)  # (*D, 1, T, L) every L tokens from each position
    wild = torch.arange(L, device=phrases.device) >= phrase_len[..., None]  # (*D, C, L)
    hit = ((windows == phrases.unsqueeze(-2)) | wild.unsqueeze(-2)).all(-1)  # (*D, C, T)
    return hit.any(-1) | absent


def suffix_progress(window: Tensor, phrases: Tensor, phrase_len: Tensor) -> Tensor:
    """How far each phrase has got at the end of a token sequence.

    window (*D, W) long: the last W tokens (-1 pads the left of a short sequence; W >= L - 1 sees
    every partial match, W >= L every complete one), phrases (*D, C, L), phrase_len (*D, C) -> (*D, C) long: the largest j <= the phrase's length such
    that the window ends with the phrase's first j tokens (j == length: the phrase ends right here).
    """
    W, L = window.size(-1), phrases.size(-1)
    best = torch.zeros(torch.broadcast_shapes(window.shape[:-1] + (1,), phrase_len.shape), dtype=torch.long,
                       device=window.device)
    for j in range(1, min(L, W) + 1):
        ends = (window[..., W - j:].unsqueeze(-2) == phrases[..., :j]).all(-1) & (j <= phrase_len)  # (*D, C)
        best = torch.where(ends, j, best)
    return best


def allocate_banks(score: Tensor, bank: Tensor, num_banks: Tensor, width: int) -> Tensor:
    """Dynamic beam allocation: which candidates of each row fill a beam of ``width``.

    score (A, M) float (-inf: not a candidate), bank (A, M) long in [0, num_banks) (constraint
    tokens met), num_banks (A,) long -> (A, M) bool, at most ``width`` chosen per row. Each bank gets
    ``width // num_banks`` slots, the top bank (every constraint met) the remainder too; going from
    the top bank down, slots a bank cannot fill pass to the bank below; slots still free after the
    lowest bank go to the best remaining candidates of any bank. Within a bank the best scores win,
    ties to the earlier candidate. Loops over banks only, never over rows.
    """
    A = score.size(0)
    valid = torch.isfinite(score)  # (A, M)
    NB = int(num_banks.max())
    banks = torch.arange(NB, device=score.device)  # (NB,)
    base = width // num_banks  # (A,)
    share = torch.where(banks < num_banks[:, None], base[:, None], 0)  # (A, NB)
    share[torch.arange(A, device=score.device), num_banks - 1] += width - base * num_banks
    in_bank = (bank[..., None] == banks) & valid[..., None]  # (A, M, NB)
    count = in_bank.sum(1)  # (A, NB)
    give = torch.zeros_like(count)
    carry = torch.zeros_like(num_banks)
    for b in range(NB - 1, -1, -1):
        offer = share[:, b] + carry
        give[:, b] = torch.minimum(offer, count[:, b])
        carry = offer - give[:, b]
    order = score.sort(dim=1, descending=True, stable=True).indices  # (A, M) best first
    ranked = pick_beams(in_bank.long(), order)  # (A, M, NB) in score order
    rank_in_bank = ((ranked.cumsum(1) - ranked) * ranked).sum(-1)  # (A, M) candidates of its bank ahead of it
    bank_of = pick_beams(bank, order).clamp(0, NB - 1)
    chosen_sorted = pick_beams(valid, order) & (rank_in_bank < give.gather(1, bank_of))
    spare = pick_beams(valid, order) & ~chosen_sorted  # (A, M)
    spare_rank = spare.long().cumsum(1) - spare.long()
    chosen_sorted |= spare & (spare_rank < carry[:, None])
    return torch.zeros_like(valid).scatter(1, order, chosen_sorted)


def unmet_constraints(tokens: Sequence[int], constraints: RowConstraints) -> list[int]:
    """Which phrases (their positions in ``constraints``) do not occur in ``tokens``: a check of one
    output, e.g. of a hypothesis closed at its step limit before it could meet them all."""
    seq = list(tokens)
    return [i for i, p in enumerate(constraints)
            if p and not any(seq[k:k + len(p)] == list(p) for k in range(len(seq) - len(p) + 1))]


# ---- the phrases of a batch ----------------------------------------------------------------------------

@dataclass
class PhraseSet:
    """The constraint phrases of B rows as padded tensors.

    Attributes:
        tokens: (B, C, L) long, phrase c of row b (-1 past its length); C and L at least 1.
        length: (B, C) long, each phrase's length (0: no phrase in that slot).
        total: (B,) long, constraint tokens of each row (its banks are 0 ... total).
    """

    tokens: Tensor
    length: Tensor
    total: Tensor

    @classmethod
    def build(cls, constraints: Sequence[RowConstraints], device: torch.device) -> PhraseSet:
        C = max([len(row) for row in constraints] + [1])
        L = max([len(p) for row in constraints for p in row] + [1])
        tokens = torch.full((len(constraints), C, L), -1, dtype=torch.long)
        length = torch.zeros(len(constraints), C, dtype=torch.long)
        for b, row in enumerate(constraints):
            for c, p in enumerate(row):
                tokens[b, c, : len(p)] = torch.as_tensor(list(p), dtype=torch.long)
                length[b, c] = len(p)
        return cls(tokens.to(device), length.to(device), length.sum(1).to(device))


@dataclass
class _StepView:
    """What :class:`ConstrainedBeamSearch` knows of the A rows of the current step."""

    rows: Tensor  # (A,) batch rows
    constrained: Tensor  # (A,) bool: the row has phrases
    phrases: Tensor  # (A, C, L)
    phrase_len: Tensor  # (A, C)
    found: Tensor  # (A, K, C) bool: phrase already in the hypothesis
    progress: Tensor  # (A, K, C) long: how far each unmet phrase has got at the hypothesis' end
    tail: Tensor  # (A, K, L - 1) long: the hypothesis' last tokens (-1 padded)
    complete: Tensor  # (A, K) bool: every phrase found (EOS allowed)


class ConstraintPool(NBestPool):
    """The n best finished hypotheses per row, those that meet every constraint first.

    A hypothesis missing a phrase can only be one closed at its row's step limit (EOS is forbidden
    until every phrase is in); such hypotheses are kept apart, and a row's result is its hypotheses
    that meet every constraint, or, when it has none, its best ones that do not.

    Args:
        num_rows, n, max_len, device: as for :class:`NBestPool`.
        phrases: the constraint phrases of the ``num_rows`` rows.
    """

    def __init__(self, num_rows: int, n: int, max_len: int, device: torch.device | str, phrases: PhraseSet) -> None:
        super().__init__(num_rows, n, max_len, device)
        self.phrases = phrases
        self.unmet = NBestPool(num_rows, n, max_len, device)

    def add(self, rows: Tensor, score: Tensor, log_prob: Tensor, tokens: Tensor, length: Tensor,
            attention: Tensor | None = None, *, ended: bool | Tensor = True) -> None:
        real = torch.arange(tokens.size(-1), device=tokens.device) < length[..., None]  # (A, M, T)
        met = phrases_found(tokens.masked_fill(~real, -1), self.phrases.tokens[rows][:, None],
                            self.phrases.length[rows][:, None]).all(-1)  # (A, M)
        super().add(rows, score.masked_fill(~met, NEG_INF), log_prob, tokens, length, attention, ended=ended)
        if bool((~met & torch.isfinite(score)).any()):
            self.unmet.add(rows, score.masked_fill(met, NEG_INF), log_prob, tokens, length, attention, ended=ended)

    def to_hypotheses(self) -> list[list[Hypothesis]]:
        return [met or unmet for met, unmet in zip(super().to_hypotheses(), self.unmet.to_hypotheses())]


# ---- the strategy ----------------------------------------------------------------------------------------

class ConstrainedBeamSearch(BeamSearch):
    """Beam search whose outputs contain every constraint phrase of their row (dynamic beam allocation).

    ``search`` takes ``constraints``: per batch row, a list of phrases, each a list of target token
    ids (no BOS/EOS; empty phrases are ignored). Every phrase must appear in the output, in any
    order; see the module docstring for how candidates and banks are chosen. EOS is forbidden until
    every phrase is in a hypothesis, so a finished hypothesis meets them all. Ranking, ``score``,
    ``n_best``, ``min_len``, stopping and per-row limits are beam search's;
    :attr:`Hypothesis.log_prob` is the model's log-probability of the output. A row without
    phrases (or a call without ``constraints``) is searched exactly as :class:`BeamSearch` searches
    it: the same tokens, log-probs and scores.

    When a row's phrases cannot all be met within its step limit, the search returns the best
    hypotheses it closed at the limit instead: they have exactly the limit's number of tokens (no
    EOS; ``log_prob`` has no EOS term) and lack a phrase, which :func:`unmet_constraints` names. A
    row with a hypothesis that meets every phrase never returns one that does not.

    The arguments are :class:`BeamSearch`'s. With c constraint tokens in a row, its beam is split
    into c + 1 banks: a ``beam_size`` above c gives every bank at least one hypothesis.
    """

    # what one search call keeps, set on that call's own copy of the strategy (see ``search``)
    _phrases: PhraseSet | None = None
    _eos: int = -1
    _view: _StepView | None = None

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int, max_len: int,
               max_lens: Tensor | None = None,
               constraints: Sequence[RowConstraints | None] | None = None) -> list[list[Hypothesis]]:
        """As :meth:`BeamSearch.search`, plus ``constraints``: one list of phrases per row (or None)."""
        rows = self._check(constraints, batch_size, bos, eos)
        if not any(rows):  # nothing to meet: plain beam search
            return super().search(decoder, state, batch_size=batch_size, bos=bos, eos=eos, max_len=max_len,
                                  max_lens=max_lens)
        runner = copy.copy(self)  # what one call keeps stays on its own copy
        runner._phrases = PhraseSet.build(rows, infer_device(decoder, state))
        runner._eos, runner._view = eos, None
        return BeamSearch.search(runner, decoder, state, batch_size=batch_size, bos=bos, eos=eos, max_len=max_len,
                                 max_lens=max_lens)

    @staticmethod
    def _check(constraints: Sequence[RowConstraints | None] | None, batch_size: int, bos: int,
               eos: int) -> list[list[list[int]]]:
        if constraints is None:
            return [[] for _ in range(batch_size)]
        if len(constraints) != batch_size:
            raise ValueError(f"constraints must have one entry per row ({batch_size}), got {len(constraints)}")
        rows = [[[int(t) for t in p] for p in (row or []) if len(p)] for row in constraints]
        for row in rows:
            for p in row:
                if min(p) < 0 or bos in p or eos in p:
                    raise ValueError(f"a constraint phrase holds target token ids, no BOS/EOS; got {p}")
        return rows

    # -- hooks ----------------------------------------------------------------------------------------
    def begin_step(self, rows: Tensor, prefix: Tensor, step: int) -> None:
        phrases = self._phrases
        if phrases is None:
            return
        A, K = prefix.shape[:2]
        constrained = phrases.total[rows] > 0  # (A,)
        if not bool(constrained.any()):
            self._view = None
            return
        ph, pl = phrases.tokens[rows], phrases.length[rows]  # (A, C, L), (A, C)
        L = ph.size(-1)
        found = phrases_found(prefix, ph[:, None], pl[:, None])  # (A, K, C)
        tail = torch.cat([prefix.new_full((A, K, L - 1), -1), prefix], -1)[..., prefix.size(-1):]  # (A, K, L-1)
        progress = suffix_progress(tail, ph[:, None], pl[:, None])  # (A, K, C)
        self._view = _StepView(rows, constrained, ph, pl, found, progress, tail, found.all(-1))

    def adjust_log_probs(self, log_probs: Tensor, prefix: Tensor, step: int) -> Tensor:
        """EOS is forbidden (-inf) for a hypothesis that still misses a phrase; nothing else changes."""
        view = self._view
        if view is None:
            return log_probs
        out = log_probs.clone()
        out[..., self._eos] = out[..., self._eos].masked_fill(~view.complete, NEG_INF)
        return out

    def select_candidates(self, scores: Tensor, eos: int) -> tuple[Tensor, Tensor]:
        """Rows with phrases choose by dynamic beam allocation (see :func:`allocate_banks`), ``first``
        among all candidates and ``live`` among the non-EOS ones; the others as beam search does."""
        first, live = beam_candidates(scores, eos)
        view = self._view
        if view is None:
            return first, live
        K, V = scores.shape[1:]
        flat = scores.flatten(1)  # (A, K*V)
        cands, valid = self._candidates(scores, eos, view)  # (A, M) distinct flat indices
        cand_score = flat.gather(1, cands).masked_fill(~valid, NEG_INF)  # (A, M)
        bank = self._banks(cands, V, view)  # (A, M) constraint tokens met after the candidate
        banks = view.phrase_len.sum(1) + 1  # (A,) banks 0 ... constraint tokens
        is_eos = cands % V == eos
        chosen_first = allocate_banks(cand_score, bank, banks, K)
        chosen_live = allocate_banks(cand_score.masked_fill(is_eos, NEG_INF), bank, banks, K)
        no_eos = (eos + 1) % V  # a non-EOS candidate of beam 0: finishes nothing
        dba_first = _best_chosen(chosen_first, cand_score, cands, K, no_eos)
        dba_live = _best_chosen(chosen_live, cand_score, cands, K, eos)  # EOS: leaves the slot empty
        use = view.constrained[:, None]
        return torch.where(use, dba_first, first), torch.where(use, dba_live, live)

    def new_pool(self, batch_size: int, max_len: int, device: torch.device) -> NBestPool:
        if self._phrases is None:
            return super().new_pool(batch_size, max_len, device)
        return ConstraintPool(batch_size, self.n_best, max_len, device, self._phrases)

    # -- candidates ---------------------------------------------------------------------------------------
    def _candidates(self, scores: Tensor, eos: int, view: _StepView) -> tuple[Tensor, Tensor]:
        """(A, M) sorted distinct flat indices of the DBA candidates of each row, and which are real:
        the K best of the beam (with and without EOS), each hypothesis' best token (with and without
        EOS), its EOS, and its next token of every unmet phrase."""
        A, K, V = scores.shape
        flat = scores.flatten(1)
        no_eos = scores.clone()
        no_eos[..., eos] = NEG_INF
        beam = torch.arange(K, device=scores.device)[None, :] * V  # (1, K)
        L = view.phrases.size(-1)
        at = view.progress.clamp(max=L - 1)[..., None]  # (A, K, C, 1)
        nxt = view.phrases[:, None].expand(A, K, -1, -1).gather(-1, at).squeeze(-1)  # (A, K, C)
        nxt = torch.where(view.found, -1, nxt)  # (A, K, C) -1: nothing to advance
        sentinel = K * V
        parts = [
            flat.topk(K, dim=1).indices,
            no_eos.flatten(1).topk(K, dim=1).indices,
            beam + scores.argmax(-1),
            beam + no_eos.argmax(-1),
            (beam + eos).expand(A, K),
            torch.where(nxt >= 0, beam[..., None] + nxt.clamp(min=0), sentinel).flatten(1),
        ]
        cands = torch.cat(parts, 1).sort(dim=1).values  # (A, M)
        dup = torch.zeros_like(cands, dtype=torch.bool)
        dup[:, 1:] = cands[:, 1:] == cands[:, :-1]
        valid = (cands < sentinel) & ~dup
        return cands.clamp(max=sentinel - 1), valid

    @staticmethod
    def _banks(cands: Tensor, V: int, view: _StepView) -> Tensor:
        """(A, M) long: the constraint tokens a hypothesis has met once the candidate is appended, i.e.
        the lengths of the phrases in it plus the furthest progress on an unmet one."""
        origin, token = cands // V, cands % V  # (A, M)
        window = torch.cat([pick_beams(view.tail, origin), token[..., None]], -1)  # (A, M, L)
        ph, pl = view.phrases[:, None], view.phrase_len[:, None]  # (A, 1, C, L), (A, 1, C)
        progress = suffix_progress(window, ph, pl)  # (A, M, C)
        found = pick_beams(view.found, origin) | ((progress == pl) & (pl > 0))  # (A, M, C)
        met = (found.long() * pl).sum(-1)
        partial = progress.masked_fill(found, 0).amax(-1)
        return met + partial


def _best_chosen(chosen: Tensor, score: Tensor, cands: Tensor, width: int, filler: int) -> Tensor:
    """(A, width) flat indices of the chosen candidates, best score first; ``filler`` pads a row that
    chose fewer. chosen (A, M) bool, score (A, M), cands (A, M) long."""
    key = score.masked_fill(~chosen, NEG_INF)
    order = key.sort(dim=1, descending=True, stable=True).indices[:, :width]  # (A, width)
    taken = torch.arange(width, device=score.device) < chosen.sum(1, keepdim=True)  # (A, width)
    return torch.where(taken, cands.gather(1, order), filler)
