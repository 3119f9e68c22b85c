"""Exact MAP search: a branch and bound over the decoder's ``step``, seeded by beam search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.functional import (
    NEG_INF,
    best_reachable_score,
    check_max_len,
    infer_device,
    length_normalize,
    row_limits,
)


@dataclass
class ExactHypothesis(Hypothesis):
    """A :class:`Hypothesis` with what the exact search proved about it.

    Attributes:
        optimal: True when no output of the row scores higher (the search ran to its end); False when
            the row's ``max_expansions`` budget stopped it first: the best output found so far.
        expansions: prefixes of the row that the branch and bound stepped (the seeding beam's steps
            are not counted).
    """

    optimal: bool = True
    expansions: int = 0


@dataclass
class _Pending:
    """Prefixes of one row waiting to be stepped, all ``length`` tokens long, ``log_prob`` descending.

    ``state`` holds their parents' decoder rows (``rows`` (n,) long); ``tokens`` (n,) long is each
    prefix's last token (BOS for the empty prefix), what its step feeds. A prefix's tokens are
    ``base[origin]`` ((m, length - 1) long, the parents' tokens) followed by its own last token.
    """

    state: Any
    rows: Tensor
    tokens: Tensor
    log_prob: Tensor
    base: Tensor
    origin: Tensor
    length: int

    def prefix(self, k: int) -> Tensor:
        """(k, length) long: the tokens of the first ``k`` prefixes."""
        if self.length == 0:
            return self.base[self.origin[:k]]
        return torch.cat([self.base[self.origin[:k]], self.tokens[:k, None]], 1)

    def drop(self, k: int) -> None:
        """Forget the first ``k`` prefixes (they have been taken to be stepped)."""
        self.rows, self.tokens = self.rows[k:], self.tokens[k:]
        self.log_prob, self.origin = self.log_prob[k:], self.origin[k:]


@dataclass
class _Block:
    """The prefixes of one row stepped together: what :class:`_Pending` gave up, with their tokens."""

    row: int
    state: Any
    rows: Tensor
    tokens: Tensor
    log_prob: Tensor
    prefix: Tensor  # (k, length) long
    length: int


_UNPROVEN = object()  # the budget ran out while some prefix could still beat the incumbent


class ExactSearch(SearchStrategy):
    """Exact MAP search: the output of highest ``score`` of every row, or a flag saying the budget hit first.

    ``score = log_prob / L ** length_penalty`` with ``L`` the generated tokens counting the EOS, as
    beam search ranks. The search is a depth-first branch and bound over prefixes. Each row's
    incumbent (the best complete output found so far) starts as the row's best from
    :class:`~seq2seq_lightning.search.beam.BeamSearch` with ``beam_size`` and ``length_penalty``.
    A prefix is stepped only while the best score any of its completions can reach
    (:func:`~seq2seq_lightning.search.functional.best_reachable_score`: its log-prob itself with
    ``length_penalty == 0``, divided by the row's step limit with ``length_penalty > 0``, one EOS
    away with ``length_penalty < 0``) beats the incumbent; a prefix whose bound only equals it is
    pruned, so of equal-scoring outputs the one found first (the beam's) is kept. Stepping a prefix
    ends its EOS child (and, at the row's step limit, closes every child as it is, no EOS term):
    complete outputs that may raise the incumbent. Its other children that still beat the incumbent
    wait in the row's stack, best first, and the best ``max_rows`` of the newest ones are stepped
    next, so good complete outputs turn up early and tighten the bound. A row whose stack empties
    has its proven optimum.

    Each row keeps its own stack and incumbent and steps one block of its prefixes per round; the
    blocks of all rows that live in one decoder state are stepped together, packed into decoder
    calls of at most ``max_rows`` rows (``reorder_state`` picks them; no two states are ever
    joined). So one ``step`` call serves many prefixes of many rows, and a row's result (budget
    included) does not depend on the other rows of its batch. Memory: at most ``max_active_rows``
    rows are searched at once (a larger batch goes through in groups of that many); a row holds at
    most one pending decoder state per prefix length (shared with the rows it was stepped with),
    cut down to the decoder rows of prefixes that still wait, each of at most ``max_rows`` rows, and
    at most ``max_rows × V`` waiting prefixes per length.

    :meth:`search` returns one :class:`ExactHypothesis` per row: ``log_prob`` is the model's
    log-probability of its tokens, ``score`` the ranking value, ``attention`` is always None, and
    ``ExactHypothesis.optimal`` says whether the row was proven optimal (False: ``max_expansions``
    stopped it, and it holds the best output found so far, never worse than the beam's);
    ``ExactHypothesis.expansions`` counts the prefixes of that row stepped by the branch and bound,
    the seeding beam's steps not counted. A row without any output of finite log-probability gets
    an empty list, as from beam search.

    Args:
        beam_size: width of the seeding beam search; 0 starts with no incumbent (the depth-first
            search then finds its own first outputs).
        length_penalty: exponent of the length normalization; 0 ranks by raw log-probability,
            larger values favour longer outputs (and weaken the bound: a positive penalty can cost
            many more expansions).
        max_expansions: prefixes each row may step before it stops with the best output found
            so far, flagged ``optimal=False``; None: no limit. A row without any output yet (only
            possible with ``beam_size=0``) keeps going until it finds one.
        max_rows: most prefixes in one decoder call, and in one row's block.
        max_active_rows: most rows searched at once; a larger batch is searched in groups of this
            many rows, one group after another (the decoder states the search keeps grow with it).
    """

    row_limits = True

    def __init__(self, beam_size: int = 4, length_penalty: float = 0.0, max_expansions: int | None = 100_000,
                 max_rows: int = 512, max_active_rows: int = 32) -> None:
        if beam_size < 0:
            raise ValueError(f"beam_size must be >= 0, got {beam_size}")
        if max_expansions is not None and max_expansions < 1:
            raise ValueError(f"max_expansions must be >= 1 or None, got {max_expansions}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if max_active_rows < 1:
            raise ValueError(f"max_active_rows must be >= 1, got {max_active_rows}")
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        self.max_expansions = max_expansions
        self.max_rows = max_rows
        self.max_active_rows = max_active_rows

    @torch.no_grad()
    def search(self, decoder: StepDecoder, state: Any, *, batch_size: int, bos: int, eos: int,
               max_len: int, max_lens: Tensor | None = None) -> list[list[Hypothesis]]:
        check_max_len(max_len)
        B = batch_size
        device = infer_device(decoder, state)
        limit = row_limits(max_lens, B, max_len, device)  # (B,) steps allowed per row
        if B <= self.max_active_rows:
            return self._search(decoder, state, B, bos, eos, max_len, limit, device)
        results: list[list[Hypothesis]] = []
        for start in range(0, B, self.max_active_rows):  # a row's result does not depend on its batch
            rows = torch.arange(start, min(start + self.max_active_rows, B), device=device)
            results += self._search(decoder, decoder.reorder_state(state, rows), rows.numel(), bos, eos,
                                    int(limit[rows].max()), limit[rows], device)
        return results

    def _search(self, decoder: StepDecoder, state: Any, B: int, bos: int, eos: int, max_len: int, limit: Tensor,
                device: torch.device) -> list[list[Hypothesis]]:
        """The search of ``B`` rows at once (``limit`` (B,) their step limits)."""
        run = _Run(self, decoder, limit.tolist(), eos, device)
        if self.beam_size > 0 and B > 0:
            seed = BeamSearch(beam_size=self.beam_size, length_penalty=self.length_penalty).search(
                decoder, decoder.reorder_state(state, torch.arange(B, device=device)), batch_size=B, bos=bos,
                eos=eos, max_len=max_len, max_lens=limit)
            for b, hyps in enumerate(seed):
                if hyps:
                    run.best[b] = [hyps[0].score, hyps[0].log_prob, list(hyps[0].tokens)]
        long = {"dtype": torch.long, "device": device}
        for b in range(B):  # the empty prefix of every row: feed BOS to row b of ``state``
            run.stacks[b].append(_Pending(state, torch.tensor([b], **long), torch.tensor([bos], **long),
                                          torch.zeros(1, device=device), torch.zeros(1, 0, **long),
                                          torch.zeros(1, **long), 0))
        expansions, optimal = [0] * B, [True] * B
        while True:  # one round: every row still searching steps its next block
            blocks = []
            for b in range(B):
                if not run.stacks[b]:
                    continue
                left = None if self.max_expansions is None else self.max_expansions - expansions[b]
                block = run.next_block(b, left)
                if block is _UNPROVEN:
                    optimal[b], run.stacks[b] = False, []
                elif block is not None:
                    expansions[b] += block.rows.numel()
                    blocks.append(block)
            if not blocks:
                break
            for call in run.calls(blocks):
                run.expand(call)
        return [[ExactHypothesis(tokens, log_prob, score, None, optimal[b], expansions[b])] if score > NEG_INF else []
                for b, (score, log_prob, tokens) in enumerate(run.best)]


class _Run:
    """The working state of one :meth:`ExactSearch.search`: per row its step limit, incumbent
    (``best``: score, log_prob, tokens) and stack of pending prefixes."""

    def __init__(self, strategy: ExactSearch, decoder: StepDecoder, limits: list[int], eos: int,
                 device: torch.device) -> None:
        self.decoder, self.limits, self.eos, self.device = decoder, limits, eos, device
        self.penalty, self.max_rows = strategy.length_penalty, strategy.max_rows
        self.best: list[list[Any]] = [[NEG_INF, 0.0, []] for _ in limits]
        self.stacks: list[list[_Pending]] = [[] for _ in limits]

    def bound(self, log_prob: Tensor, length: int | Tensor, limit: Tensor) -> Tensor:
        """The best score that completions of prefixes with ``log_prob`` and ``length`` tokens can reach."""
        return best_reachable_score(log_prob, length, self.penalty, limit)

    def next_block(self, b: int, left: int | None) -> _Block | object | None:
        """Row ``b``'s next prefixes to step, None once none can beat its incumbent (proven optimal),
        or ``_UNPROVEN`` when some could but the budget (``left`` expansions) is spent."""
        stack, incumbent = self.stacks[b], self.best[b][0]
        limit = torch.tensor(self.limits[b], device=self.device)
        exhausted = left is not None and left <= 0 and incumbent > NEG_INF
        while stack:
            top = stack[-1]
            k = min(self.max_rows, top.rows.numel(), left if left is not None and left > 0 else self.max_rows)
            ok = int((self.bound(top.log_prob[:k], top.length, limit) > incumbent).sum())  # a best-first run
            if ok == 0:
                stack.pop()  # every prefix there is as bad or worse
                continue
            if exhausted:
                return _UNPROVEN
            block = _Block(b, top.state, top.rows[:ok], top.tokens[:ok], top.log_prob[:ok], top.prefix(ok),
                           top.length)
            if ok < k or ok == top.rows.numel():
                stack.pop()
            else:
                top.drop(ok)
            return block
        return None

    def calls(self, blocks: list[_Block]) -> list[list[_Block]]:
        """The blocks of one decoder state, packed in row order into calls of at most ``max_rows`` rows."""
        by_state: dict[int, list[_Block]] = {}
        for block in blocks:
            by_state.setdefault(id(block.state), []).append(block)
        calls: list[list[_Block]] = []
        for same in by_state.values():
            size = self.max_rows
            for block in same:
                if size + block.rows.numel() > self.max_rows:
                    calls.append([])
                    size = 0
                calls[-1].append(block)
                size += block.rows.numel()
        return calls

    def expand(self, call: list[_Block]) -> None:
        """Step the prefixes of ``call`` at once, let complete children raise their row's incumbent and
        push the children that can still beat it on their row's stack."""
        sizes = [block.rows.numel() for block in call]
        P = len(call)
        state = self.decoder.reorder_state(call[0].state, torch.cat([block.rows for block in call]))
        logp, state = self.decoder.step(torch.cat([block.tokens for block in call]), state)
        device = self.device
        logp = logp.float().to(device)  # (n, V)
        n, V = logp.shape
        seg = torch.repeat_interleave(torch.arange(P, device=device), torch.tensor(sizes, device=device))  # (n,)
        length = torch.tensor([block.length + 1 for block in call], device=device)[seg, None]  # (n, 1) children's
        limit = torch.tensor([self.limits[block.row] for block in call], device=device)[seg, None]  # (n, 1)
        incumbent = torch.tensor([self.best[block.row][0] for block in call], device=device)  # (P,)
        cand = torch.cat([block.log_prob for block in call])[:, None] + logp  # (n, V) children's log-probs

        # Complete children: the EOS one of every prefix; every child at the row's step limit.
        ends = (torch.arange(V, device=device) == self.eos) | (length == limit)  # (n, V)
        done = length_normalize(cand, length, self.penalty).masked_fill(~ends, NEG_INF)  # (n, V) scores
        flat, seg_flat = done.flatten(), seg.repeat_interleave(V)  # (n*V,)
        top = torch.full((P,), NEG_INF, device=device).scatter_reduce(0, seg_flat, flat, "amax")  # (P,)
        hit = (flat == top[seg_flat]) & (flat > incumbent[seg_flat])
        first = torch.full((P,), n * V, device=device).scatter_reduce(
            0, seg_flat, torch.arange(n * V, device=device).masked_fill(~hit, n * V), "amin")  # (P,) first best
        starts = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        for p in (first < n * V).nonzero().flatten().tolist():  # rows whose incumbent improves (rare)
            r, v = divmod(int(first[p]), V)
            tokens = call[p].prefix[r - starts[p]].tolist() + ([] if v == self.eos else [v])
            self.best[call[p].row] = [float(top[p]), float(cand[r, v]), tokens]
            incumbent[p] = top[p]

        # Live children that can still beat the incumbent wait on their row's stack, best first.
        bound = self.bound(cand, length, limit)  # (n, V)
        keep = ~ends & (bound > incumbent[seg, None])
        rows, tokens = keep.nonzero(as_tuple=True)  # (M,), (M,)
        lp = cand[rows, tokens]
        order = lp.sort(descending=True, stable=True).indices
        order = order[seg[rows[order]].sort(stable=True).indices]  # by row, best first within each
        rows, tokens, lp = rows[order], tokens[order], lp[order]
        counts = torch.bincount(seg[rows], minlength=P).tolist()
        # the children keep only their parents' decoder rows alive, not the whole call's
        parents = rows.unique()  # sorted
        if 0 < parents.numel() < n:
            state = self.decoder.reorder_state(state, parents)
        local = torch.searchsorted(parents, rows)  # (M,) each child's parent row in ``state``
        for p, (r, q, t, l) in enumerate(zip(rows.split(counts), local.split(counts), tokens.split(counts),
                                             lp.split(counts))):
            if r.numel():
                block = call[p]
                self.stacks[block.row].append(_Pending(state, q, t, l, block.prefix, r - starts[p], block.length + 1))
