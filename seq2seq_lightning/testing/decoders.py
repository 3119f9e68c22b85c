"""``check_decoder``: shapes, teacher-forcing consistency, reordering, masking of a decoder."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from seq2seq_lightning.decoders.base import Decoder
from seq2seq_lightning.encoders.base import EncoderOutput
from seq2seq_lightning.testing._common import (
    ATOL,
    BOS,
    MEMORY_LENGTHS,
    SCHEDULES,
    TARGET_STEPS,
    _Report,
    _seeded,
    _subclass,
)


def check_decoder(cls: type, **init_kwargs: Any) -> None:
    """Check a decoder class against the decoder contract.

    Built as ``cls(vocab_size=13, memory_size=6, **init_kwargs)`` in eval mode and fed a hand-made
    EncoderOutput of 3 rows with 5, 3 and 2 real memory positions out of S = 5, and target rows of
    T = 6 tokens, BOS (2) first. Properties: ``subclass of Decoder``, ``forward shapes`` (logits
    (B, T, V), attention (B, T, S) or None), ``forward attention`` (no weight on masked positions),
    ``finite outputs`` (no NaN logits), ``deterministic``, ``step shapes`` ((N, V) log-probs and a
    state), ``step log-probs float32``, ``step log-probs normalised`` (logsumexp 0), ``teacher
    forcing`` (step from init_state over the same tokens gives log_softmax of forward's logits),
    ``last_attention`` (None, or (N, S) with no weight on masked positions, equal to forward's
    attention when both exist), ``reorder_state`` (picks, repeats and drops rows: the next steps give
    the reordered rows' log-probs), ``batch independence`` (a row alone gives what it gave in the
    batch) and ``masked memory has no effect`` (other values at masked positions, or no masked
    positions at all, change nothing).
    """
    rep = _Report("check_decoder", cls)
    _subclass(rep, cls, Decoder)
    kwargs = {"vocab_size": 13, "memory_size": 6, **init_kwargs}
    V, D = kwargs["vocab_size"], kwargs["memory_size"]
    with _seeded():
        with rep.checking("builds"):
            decoder = cls(**kwargs).eval()
        g = torch.Generator().manual_seed(0)
        lengths = torch.tensor(MEMORY_LENGTHS)
        B, S = len(MEMORY_LENGTHS), max(MEMORY_LENGTHS)
        mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
        enc = EncoderOutput(torch.randn(B, S, D, generator=g), mask, torch.randn(B, D, generator=g))
        tokens = torch.randint(0, V, (B, TARGET_STEPS), generator=g)  # (B, T)
        tokens[:, 0] = min(BOS, V - 1)
        _DecoderCheck(rep, decoder, V).run(enc, tokens)


class _DecoderCheck:
    def __init__(self, rep: _Report, decoder: Decoder, vocab_size: int) -> None:
        self.rep, self.decoder, self.V = rep, decoder, vocab_size

    def forward(self, tokens: Tensor, enc: EncoderOutput, prop: str) -> tuple[Tensor, Tensor | None]:
        rep = self.rep
        with rep.checking(prop):
            out = self.decoder(tokens, enc)
        rep.require(isinstance(out, tuple) and len(out) == 2, "forward shapes",
                    f"forward must return (logits, attention or None), got {type(out).__name__}")
        logits, attn = out
        (B, T), S = tokens.shape, enc.memory.size(1)
        rep.require(isinstance(logits, Tensor) and logits.shape == (B, T, self.V) and logits.is_floating_point(),
                    "forward shapes", f"logits must be ({B}, {T}, V={self.V}) float, got "
                    f"{tuple(getattr(logits, 'shape', ()))} {getattr(logits, 'dtype', type(logits).__name__)}")
        rep.require(not bool(logits.isnan().any()), "finite outputs", "forward's logits hold NaN")
        if attn is not None:
            rep.require(isinstance(attn, Tensor) and attn.shape == (B, T, S), "forward shapes",
                        f"attention must be ({B}, {T}, {S}) or None, got {tuple(getattr(attn, 'shape', ()))}")
            self.unmasked(attn, enc.mask[:, None, :], "forward attention", "forward's attention")
        return logits, attn

    def unmasked(self, weights: Tensor, mask: Tensor, prop: str, what: str) -> None:
        """No weight (and no NaN) where ``mask`` is False."""
        off = weights.float().masked_fill(mask.expand_as(weights), 0.0).abs().nan_to_num(nan=math.inf)
        self.rep.require(float(off.max()) <= 1e-6 if off.numel() else True, prop,
                         f"{what} puts weight up to {float(off.max()):.3g} on masked memory positions")

    def steps(self, enc: EncoderOutput, tokens: Tensor, schedule: dict[int, list[int]] | None = None,
              prop: str | None = None) -> list[tuple[Tensor, Tensor | None, Tensor]]:
        """Step through ``tokens`` from init_state(enc), reordering by ``schedule`` before the steps it
        names; per step (log-probs (N, V), last_attention (N, S) or None, batch row of each of the N).
        Every failure is reported as ``prop`` when given."""
        rep, decoder = self.rep, self.decoder
        B, T = tokens.shape
        S = enc.memory.size(1)
        with rep.checking(prop or "init_state"):
            state = decoder.init_state(enc)
        rows, out = torch.arange(B), []
        for t in range(T):
            if schedule and t in schedule:
                with rep.checking(prop or "reorder_state"):
                    state = decoder.reorder_state(state, torch.tensor(schedule[t]))
                rows = rows[torch.tensor(schedule[t])]
            with rep.checking(prop or "step"):
                result = decoder.step(tokens[rows, t], state)
            rep.require(isinstance(result, tuple) and len(result) == 2, prop or "step shapes",
                        f"step must return (log-probs, state), got {type(result).__name__}")
            logp, state = result
            N = rows.numel()
            rep.require(isinstance(logp, Tensor) and logp.shape == (N, self.V), prop or "step shapes",
                        f"step {t} on {N} rows returned log-probs of shape {tuple(getattr(logp, 'shape', ()))}, "
                        f"expected ({N}, {self.V})")
            rep.require(logp.dtype == torch.float32, prop or "step log-probs float32",
                        f"step {t} returned {logp.dtype} log-probs")
            lse = logp.logsumexp(-1)
            rep.require(bool((lse.abs() <= ATOL).all()), prop or "step log-probs normalised",
                        f"step {t}: logsumexp over the vocabulary is {[round(x, 5) for x in lse.tolist()]}, not 0")
            att = getattr(decoder, "last_attention", None)
            if att is not None:
                rep.require(isinstance(att, Tensor) and att.shape == (N, S), prop or "last_attention",
                            f"after step {t} on {N} rows last_attention has shape "
                            f"{tuple(getattr(att, 'shape', ()))}, expected ({N}, {S})")
                if prop is None:  # the other runs are compared with this one
                    self.unmasked(att, enc.mask[rows], "last_attention", f"last_attention after step {t}")
            out.append((logp, att, rows))
        return out

    def same_steps(self, got: list, ref: list, prop: str, what: str) -> None:
        """Per step, each row of ``got`` equals the row of ``ref`` it stands for."""
        for t, ((logp, att, rows), (ref_logp, ref_att, _)) in enumerate(zip(got, ref)):
            self.rep.close(logp, ref_logp[rows], prop, f"{what}: step {t} log-probs of rows {rows.tolist()}")
            if att is not None and ref_att is not None:
                self.rep.close(att, ref_att[rows], prop, f"{what}: step {t} last_attention of rows {rows.tolist()}")

    def same_forward(self, got: tuple, ref: tuple, rows: list[int], width: int, prop: str, what: str) -> None:
        self.rep.close(got[0], ref[0][rows], prop, f"{what}: forward's logits")
        if got[1] is not None and ref[1] is not None:
            self.rep.close(got[1], ref[1][rows][..., :width], prop, f"{what}: forward's attention")

    def run(self, enc: EncoderOutput, tokens: Tensor) -> None:
        rep = self.rep
        ref_fwd = self.forward(tokens, enc, "forward")
        self.same_forward(self.forward(tokens, enc, "deterministic"), ref_fwd, list(range(len(tokens))),
                          enc.memory.size(1), "deterministic", "a second forward (dropout left on in eval mode?)")
        ref = self.steps(enc, tokens)
        logits, attn = ref_fwd
        for t, (logp, att, _) in enumerate(ref):
            rep.close(logp, logits[:, t].float().log_softmax(-1), "teacher forcing",
                      f"step {t}'s log-probs (stepping from init_state) against log_softmax of forward's logits")
            if att is not None and attn is not None:
                rep.close(att, attn[:, t], "last_attention", f"step {t}'s last_attention against forward's attention")
        for schedule in SCHEDULES:
            what = "after reorder_state with " + ", ".join(f"index {i} before step {t}" for t, i in schedule.items())
            self.same_steps(self.steps(enc, tokens, schedule, "reorder_state"), ref, "reorder_state", what)
        S = enc.memory.size(1)
        for i in range(len(tokens)):
            alone = EncoderOutput(enc.memory[i : i + 1], enc.mask[i : i + 1], enc.summary[i : i + 1])
            what = f"row {i} decoded alone"
            self.same_forward(self.forward(tokens[i : i + 1], alone, "batch independence"), ref_fwd, [i], S,
                              "batch independence", what)
            self.same_steps(self.steps(alone, tokens[i : i + 1], prop="batch independence"),
                            [(lp[i : i + 1], None if a is None else a[i : i + 1], r) for lp, a, r in ref],
                            "batch independence", what)
        prop = "masked memory has no effect"
        noise = torch.randn(enc.memory.shape, generator=torch.Generator().manual_seed(1)) * 10
        other = EncoderOutput(torch.where(enc.mask[..., None], enc.memory, noise), enc.mask, enc.summary)
        what = "other memory values at masked positions"
        self.same_forward(self.forward(tokens, other, prop), ref_fwd, list(range(len(tokens))), S, prop, what)
        self.same_steps(self.steps(other, tokens, prop=prop), ref, prop, what)
        for i, n in enumerate(MEMORY_LENGTHS):
            if n == S:
                continue
            cut = EncoderOutput(enc.memory[i : i + 1, :n], enc.mask[i : i + 1, :n], enc.summary[i : i + 1])
            what = f"row {i} alone with its {S - n} masked positions removed"
            self.same_forward(self.forward(tokens[i : i + 1], cut, prop), ref_fwd, [i], n, prop, what)
            got = self.steps(cut, tokens[i : i + 1], prop=prop)
            self.same_steps(got, [(lp[i : i + 1], None if a is None else a[i : i + 1, :n], r) for lp, a, r in ref],
                            prop, what)
