"""The conformance kit: does an encoder, decoder or search strategy keep its contract?

After scikit-learn's ``check_estimator``. Each check builds the class with the given init kwargs on
tiny seeded inputs (CPU, about a second) and raises :class:`AssertionError` whose message names the
class and the broken property, or returns None::

    from seq2seq_lightning.testing import check_decoder, check_encoder, check_strategy

    check_encoder(MyEncoder, hidden_size=16)   # a text encoder is built as MyEncoder(vocab_size=17, hidden_size=16)
    check_decoder(MyDecoder, hidden_size=16)   # built as MyDecoder(vocab_size=13, memory_size=6, hidden_size=16)
    check_strategy(MySearch, beam_size=3)      # searches a seeded toy decoder (ToyStepDecoder)

``vocab_size`` and ``memory_size`` may be given too. An exception raised by the class under test is
reported as a failure of the property being checked. Messages read
``check_decoder(MyDecoder): teacher forcing: ...``; the properties are listed in each check's docstring.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import torch
from torch import Tensor

from seq2seq_lightning.decoders.base import Decoder
from seq2seq_lightning.encoders.base import Encoder, EncoderOutput
from seq2seq_lightning.search.base import Hypothesis, SearchStrategy

__all__ = ["ProtocolError", "ToyStepDecoder", "check_decoder", "check_encoder", "check_strategy"]

ATOL = RTOL = 1e-4  # float32 tolerance of every numeric comparison
PAD, BOS, EOS = 0, 2, 3  # the project's special ids (seq2seq_lightning.data.tokenizer)
TEXT_LENGTHS = (6, 3, 1, 4)  # source rows of check_encoder (text)
IMAGE_SHAPE = (3, 3, 64, 64)  # (B, 3, H, W) of check_encoder (image)
MEMORY_LENGTHS = (5, 3, 2)  # real memory positions per row of check_decoder; S = 5
TARGET_STEPS = 6  # T of check_decoder
#: reorder_state index applied before a step, {step: index}: expand from init_state as beam search does,
#: repeat and drop after steps (twice in a row), keep one row, permute.
SCHEDULES = ({0: [2, 0, 0, 1, 2]}, {2: [1, 1, 0, 2], 4: [3, 0, 0]}, {1: [1]}, {3: [2, 1, 0]})


class ProtocolError(AssertionError):
    """A strategy used :class:`ToyStepDecoder` against the ``StepDecoder`` protocol."""


class _Report:
    """Raises failures as ``check_x(Class): property: detail``."""

    def __init__(self, check: str, cls: Any) -> None:
        self.prefix = f"{check}({getattr(cls, '__qualname__', repr(cls))})"

    def fail(self, prop: str, detail: str) -> NoReturn:
        raise AssertionError(f"{self.prefix}: {prop}: {detail}")

    def require(self, ok: Any, prop: str, detail: str) -> None:
        if not ok:
            self.fail(prop, detail)

    def close(self, actual: Tensor, expected: Tensor, prop: str, what: str) -> None:
        """Fail unless ``actual`` equals ``expected`` within the tolerance (equal infinities count as equal)."""
        a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
        self.require(a.shape == e.shape, prop, f"{what}: shape {tuple(a.shape)}, expected {tuple(e.shape)}")
        diff = torch.where(a == e, 0.0, (a - e).abs()).nan_to_num(nan=math.inf)
        if not bool((diff <= ATOL + RTOL * e.abs().nan_to_num(posinf=0.0, neginf=0.0)).all()):
            self.fail(prop, f"{what}: they differ by up to {float(diff.max()):.3g} "
                            f"(tolerance {ATOL:g} + {RTOL:g}·|expected|)")

    @contextmanager
    def checking(self, prop: str, where: str = "") -> Iterator[None]:
        """Report what the code under test raises as a failure of ``prop`` (``where``: the inputs)."""
        at = f"{where}: " if where else ""
        try:
            yield
        except ProtocolError as err:
            raise AssertionError(f"{self.prefix}: StepDecoder protocol: {at}{err}") from err
        except AssertionError as err:
            if str(err).startswith(self.prefix):
                raise
            raise AssertionError(f"{self.prefix}: {prop}: {at}{err}") from err
        except Exception as err:
            raise AssertionError(f"{self.prefix}: {prop}: {at}raised {type(err).__name__}: {err}") from err


@contextmanager
def _seeded() -> Iterator[None]:
    """Seed 0 inside, the caller's random state untouched outside; no gradients."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        yield


def _subclass(rep: _Report, cls: Any, base: type) -> None:
    rep.require(isinstance(cls, type) and issubclass(cls, base), f"subclass of {base.__name__}",
                f"{cls!r} is not a subclass of {base.__module__}.{base.__qualname__}")


# -- encoders ---------------------------------------------------------------------------------------
def check_encoder(cls: type, **init_kwargs: Any) -> None:
    """Check an encoder class against the encoder contract.

    A text encoder (``cls.modality == "text"``) is built as ``cls(vocab_size=17, **init_kwargs)`` and
    reads token rows of lengths 6, 3, 1 and 4 (ids from 1, padding 0); an image encoder
    (``"image"``) is built as ``cls(**init_kwargs)`` and reads three random (3, 64, 64) images. Both
    run in eval mode. Properties: ``subclass of Encoder``, ``output_size`` (a positive int, D),
    ``output type`` (an EncoderOutput), ``shapes`` (memory (B, S, D) float, mask (B, S) bool,
    summary (B, D) float; text: S between the longest length and the input width), ``mask`` (text:
    True exactly at real positions; image: every row has a real position), ``finite outputs``,
    ``deterministic``, ``padding has no effect`` (text: other ids in the padding and wider padding
    leave every row's real positions and summary unchanged) and ``batch independence`` (a row
    encoded alone gives what it gave inside the batch).
    """
    rep = _Report("check_encoder", cls)
    _subclass(rep, cls, Encoder)
    modality = getattr(cls, "modality", "text")
    rep.require(modality in ("text", "image"), "modality", f"modality is {modality!r}, not 'text' or 'image'")
    with _seeded():
        kwargs = {"vocab_size": 17, **init_kwargs} if modality == "text" else dict(init_kwargs)
        with rep.checking("builds"):
            encoder = cls(**kwargs).eval()
        size = getattr(encoder, "output_size", None)
        rep.require(isinstance(size, int) and not isinstance(size, bool) and size > 0, "output_size",
                    f"output_size must be a positive int (D), got {size!r}")
        if modality == "text":
            _check_text_encoder(rep, encoder, kwargs["vocab_size"])
        else:
            _check_image_encoder(rep, encoder)


def _encode(rep: _Report, encoder: Encoder, prop: str, *inputs: Tensor) -> EncoderOutput:
    """Run the encoder and check the output's type, shapes and finiteness."""
    with rep.checking(prop):
        out = encoder(*inputs)
    rep.require(isinstance(out, EncoderOutput), "output type",
                f"forward returned {type(out).__name__}, not seq2seq_lightning.encoders.EncoderOutput")
    B, D = inputs[0].size(0), encoder.output_size
    m, k, s = out.memory, out.mask, out.summary
    rep.require(all(isinstance(x, Tensor) for x in (m, k, s)), "shapes", "memory, mask and summary must be tensors")
    rep.require(m.dim() == 3 and m.shape[0] == B and m.shape[2] == D and m.is_floating_point(), "shapes",
                f"memory is {tuple(m.shape)} {m.dtype}, expected (B={B}, S, D={D}) float")
    rep.require(k.shape == m.shape[:2] and k.dtype == torch.bool, "shapes",
                f"mask is {tuple(k.shape)} {k.dtype}, expected {tuple(m.shape[:2])} torch.bool")
    rep.require(s.shape == (B, D) and s.is_floating_point(), "shapes",
                f"summary is {tuple(s.shape)} {s.dtype}, expected ({B}, {D}) float")
    rep.require(bool(torch.isfinite(m).all()) and bool(torch.isfinite(s).all()), "finite outputs",
                "memory or summary holds NaN or inf (padded positions included)")
    return out


def _same_rows(rep: _Report, prop: str, what: str, ref: EncoderOutput, other: EncoderOutput,
               rows: Sequence[int], lengths: Sequence[int] | None) -> None:
    """Row rows[j] of ``ref`` equals row j of ``other`` on its real positions and summary."""
    for j, i in enumerate(rows):
        n = ref.memory.size(1) if lengths is None else lengths[i]
        rep.close(other.memory[j, :n], ref.memory[i, :n], prop, f"{what}: memory of row {i}")
        rep.close(other.summary[j], ref.summary[i], prop, f"{what}: summary of row {i}")


def _check_text_encoder(rep: _Report, encoder: Encoder, vocab_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor(TEXT_LENGTHS)
    B, S = len(TEXT_LENGTHS), max(TEXT_LENGTHS)
    real = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
    tokens = torch.randint(1, vocab_size, (B, S), generator=g).masked_fill(~real, PAD)  # (B, S)

    def mask_ok(out: EncoderOutput, width: int) -> None:
        n = out.memory.size(1)
        rep.require(S <= n <= width, "shapes",
                    f"memory has {n} positions for input width {width} and longest length {S}")
        expected = torch.arange(n)[None, :] < lengths[:, None]
        rep.require(torch.equal(out.mask.cpu(), expected), "mask",
                    f"mask {out.mask.int().tolist()} is not True exactly at the real positions of lengths "
                    f"{lengths.tolist()}")

    out = _encode(rep, encoder, "forward", tokens, lengths)
    mask_ok(out, S)
    _same_rows(rep, "deterministic", "a second forward of the same batch (dropout left on in eval mode?)", out,
               _encode(rep, encoder, "deterministic", tokens, lengths), range(B), TEXT_LENGTHS)
    wide = torch.randint(1, vocab_size, (B, S + 3), generator=g)  # other ids in the padding, 3 more columns
    wide[:, :S] = torch.where(real, tokens, wide[:, :S])
    padded = _encode(rep, encoder, "padding has no effect", wide, lengths)
    mask_ok(padded, S + 3)
    _same_rows(rep, "padding has no effect", "other ids and 3 more columns of padding", out, padded, range(B),
               TEXT_LENGTHS)
    for i in range(B):
        alone = _encode(rep, encoder, "batch independence", tokens[i : i + 1], lengths[i : i + 1])
        _same_rows(rep, "batch independence", f"row {i} encoded alone", out, alone, [i], TEXT_LENGTHS)


def _check_image_encoder(rep: _Report, encoder: Encoder) -> None:
    images = torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    out = _encode(rep, encoder, "forward", images)
    rep.require(bool(out.mask.any(1).all()), "mask", f"a row has no real position: mask {out.mask.int().tolist()}")
    _same_rows(rep, "deterministic", "a second forward of the same images (dropout left on in eval mode?)", out,
               _encode(rep, encoder, "deterministic", images), range(len(images)), None)
    for i in range(len(images)):
        alone = _encode(rep, encoder, "batch independence", images[i : i + 1])
        _same_rows(rep, "batch independence", f"image {i} encoded alone", out, alone, [i], None)


# -- decoders ---------------------------------------------------------------------------------------
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


# -- strategies -------------------------------------------------------------------------------------
class ToyStepDecoder:
    """A tiny seeded conditional language model for checking search strategies.

    The next-token log-probs are a fixed random function of (the row's context id, the generated
    prefix), computed row by row, so a row's numbers are bit-identical whatever else shares its batch.
    The EOS logit is shifted by the context (``context % 4``: some rows tend to stop at once, some run
    to ``max_len``) and grows with the prefix length; BOS is never generated (-inf). ``last_attention``
    is an (N, S) distribution that is also a function of (context, prefix). A strategy that breaks
    the ``StepDecoder`` protocol (tokens not (N,) long, a token count that does not match the state's
    rows, a first token other than BOS, a bad reorder index) gets a :class:`ProtocolError`.

    State: (N, 1 + steps) long; column 0 is the row's context id, then every token fed (BOS first).
    """

    def __init__(self, vocab_size: int = 8, src_len: int = 3, seed: int = 0, bos: int = BOS, eos: int = EOS,
                 scale: float = 2.0) -> None:
        self.vocab_size, self.src_len, self.seed, self.bos, self.eos = vocab_size, src_len, seed, bos, eos
        self.scale = scale
        self.last_attention: Tensor | None = None
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[Tensor, Tensor]] = {}

    def initial_state(self, contexts: Sequence[int]) -> Tensor:
        """(N, 1) long: the context id of each row."""
        return torch.tensor(list(contexts), dtype=torch.long)[:, None]

    def distribution(self, context: int, prefix: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(V,) float32 log-probs of the next token after ``prefix`` (generated ids, no BOS), and the
        (S,) attention of that step."""
        key = (context, prefix)
        if key not in self._cache:
            g = torch.Generator().manual_seed(zlib.crc32(repr((self.seed, context, prefix)).encode()))
            logits = torch.randn(self.vocab_size, generator=g) * self.scale  # (V,)
            logits[self.eos] += (-3.0, -1.0, 0.5, 2.0)[context % 4] + 0.5 * len(prefix)
            logits[self.bos] = -math.inf
            attention = torch.randn(self.src_len, generator=g).softmax(-1)  # (S,)
            self._cache[key] = logits.log_softmax(-1), attention
        return self._cache[key]

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (N,) long -> log-probs (N, V) float32, new state (N, 1 + steps + 1)."""
        if not isinstance(state, Tensor) or state.dim() != 2 or state.dtype != torch.long:
            raise ProtocolError(f"step() got a state that is not the decoder's own ({type(state).__name__})")
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
            raise ProtocolError(f"step() takes tokens (N,) long, got {tuple(getattr(tokens, 'shape', ()))} "
                                f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tokens.size(0) != state.size(0):
            raise ProtocolError(f"step() got {tokens.size(0)} tokens for a state of {state.size(0)} rows")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.vocab_size:
            raise ProtocolError(f"step() got token ids outside [0, {self.vocab_size}): {tokens.tolist()}")
        if state.size(1) == 1 and bool((tokens != self.bos).any()):
            raise ProtocolError(f"the first tokens fed to step() must be BOS ({self.bos}), got {tokens.tolist()}")
        state = torch.cat([state, tokens[:, None]], 1)
        rows = [self.distribution(r[0], tuple(r[2:])) for r in state.tolist()]
        if not rows:
            self.last_attention = torch.zeros(0, self.src_len)
            return torch.zeros(0, self.vocab_size), state
        self.last_attention = torch.stack([a for _, a in rows])  # (N, S)
        return torch.stack([lp for lp, _ in rows]), state  # (N, V)

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        """New row i = old row index[i]."""
        if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype != torch.long:
            raise ProtocolError(f"reorder_state() takes an index (N',) long, got {index!r}")
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < state.size(0):
            raise ProtocolError(f"reorder_state() index {index.tolist()} out of range for {state.size(0)} rows")
        return state.index_select(0, index)

    def sequence(self, tokens: Sequence[int], ended: bool) -> list[int]:
        return [*tokens, self.eos] if ended else list(tokens)

    def log_prob(self, context: int, tokens: Sequence[int], ended: bool) -> float:
        """The model's float32 log-probability of ``tokens``, plus the EOS term when ``ended``."""
        seq, total = self.sequence(tokens, ended), torch.zeros(())
        for i, tok in enumerate(seq):
            total = total + self.distribution(context, tuple(seq[:i]))[0][tok]
        return float(total)

    def attention(self, context: int, tokens: Sequence[int], ended: bool) -> Tensor:
        """(steps, S) attention of every step that produced ``tokens`` (and the EOS when ``ended``)."""
        seq = self.sequence(tokens, ended)
        return torch.stack([self.distribution(context, tuple(seq[:i]))[1] for i in range(len(seq))]) if seq \
            else torch.zeros(0, self.src_len)


def check_strategy(cls: type, **init_kwargs: Any) -> None:
    """Check a search strategy class against what every strategy must satisfy.

    Built as ``cls(**init_kwargs)`` and run over :class:`ToyStepDecoder` (seeds 0, 1, 2; batches of 4
    rows; ``max_len`` 1, 3 and 6; BOS 2, EOS 3). Properties: ``subclass of SearchStrategy``,
    ``StepDecoder protocol``, ``one list per row`` (``len(result) == batch_size``, each a non-empty
    list of Hypothesis), ``best-first`` (non-increasing score), ``token ids`` (a list of ints in the
    vocabulary), ``no EOS in tokens``, ``no BOS in tokens``, ``max_len`` (at most max_len tokens),
    ``log_prob`` (the model's log-probability of the tokens, with the EOS term when the hypothesis
    has fewer than max_len tokens), ``attention`` (when not None: the (steps, S) attention of its
    steps) and ``batch independence`` (each row searched alone gives the same hypotheses). A class
    with ``row_limits = True`` is also searched with ``max_lens`` (per-row limits 6, 1, 3, 5): the
    same properties against each row's own limit, and ``max_lens`` (each row as searched alone with
    ``max_len`` = its limit). A sampling strategy is batch-independent only with a seed: pass one.
    """
    rep = _Report("check_strategy", cls)
    _subclass(rep, cls, SearchStrategy)
    with _seeded():
        with rep.checking("builds"):
            strategy = cls(**init_kwargs)
        for seed in (0, 1, 2):
            decoder = ToyStepDecoder(seed=seed)
            contexts = [4 * seed + k for k in range(4)]
            for max_len in (1, 3, 6):
                where = f"seed {seed}, max_len={max_len}"
                batch = _search(rep, strategy, decoder, contexts, max_len, where=where)
                _check_hypotheses(rep, decoder, batch, contexts, [max_len] * len(contexts), where)
                for i, context in enumerate(contexts):
                    alone = _search(rep, strategy, decoder, [context], max_len, where=where)
                    _same_hypotheses(rep, "batch independence", alone[0], batch[i],
                                     f"{where}: row {i} searched alone against inside the batch")
            if getattr(strategy, "row_limits", False):
                limits = [6, 1, 3, 5]
                where = f"seed {seed}, max_len=6, max_lens={limits}"
                batch = _search(rep, strategy, decoder, contexts, 6, torch.tensor(limits), where)
                _check_hypotheses(rep, decoder, batch, contexts, limits, where)
                for i, (context, limit) in enumerate(zip(contexts, limits)):
                    alone = _search(rep, strategy, decoder, [context], limit, where=where)
                    _same_hypotheses(rep, "max_lens", alone[0], batch[i],
                                     f"{where}: row {i} searched alone with max_len={limit} against inside the batch")


def _search(rep: _Report, strategy: SearchStrategy, decoder: ToyStepDecoder, contexts: list[int], max_len: int,
            max_lens: Tensor | None = None, where: str = "") -> Any:
    kwargs: dict[str, Any] = {"batch_size": len(contexts), "bos": decoder.bos, "eos": decoder.eos,
                              "max_len": max_len}
    if max_lens is not None:
        kwargs["max_lens"] = max_lens
    with rep.checking("max_lens" if max_lens is not None else "search", where):
        return strategy.search(decoder, decoder.initial_state(contexts), **kwargs)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _check_hypotheses(rep: _Report, decoder: ToyStepDecoder, results: Any, contexts: list[int],
                      limits: list[int], where: str) -> None:
    B, V = len(contexts), decoder.vocab_size
    rep.require(isinstance(results, list) and len(results) == B, "one list per row",
                f"{where}: expected a list of {B} lists (one per batch row), got "
                f"{len(results) if isinstance(results, list) else type(results).__name__}")
    for i, (hyps, context, limit) in enumerate(zip(results, contexts, limits)):
        at = f"{where}, row {i}"
        rep.require(isinstance(hyps, list) and hyps and all(isinstance(h, Hypothesis) for h in hyps),
                    "one list per row", f"{at}: expected a non-empty list of Hypothesis, got {hyps!r}")
        scores = [h.score for h in hyps]
        rep.require(all(_is_number(s) for s in scores), "best-first", f"{at}: scores must be numbers, got {scores}")
        rep.require(all(a >= b for a, b in itertools.pairwise(scores)), "best-first",
                    f"{at}: scores {scores} are not in non-increasing order")
        for j, h in enumerate(hyps):
            toks, at_j = h.tokens, f"{at}, hypothesis {j}"
            rep.require(isinstance(toks, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                                       and 0 <= t < V for t in toks),
                        "token ids", f"{at_j}: tokens must be a list of ints in [0, {V}), got {toks!r}")
            rep.require(decoder.eos not in toks, "no EOS in tokens", f"{at_j}: tokens {toks} hold EOS ({decoder.eos})")
            rep.require(decoder.bos not in toks, "no BOS in tokens", f"{at_j}: tokens {toks} hold BOS ({decoder.bos})")
            rep.require(len(toks) <= limit, "max_len", f"{at_j}: {len(toks)} tokens {toks}, over the limit {limit}")
            ended = len(toks) < limit
            expected = decoder.log_prob(context, toks, ended)
            rep.require(_is_number(h.log_prob) and abs(h.log_prob - expected) <= ATOL + RTOL * abs(expected),
                        "log_prob", f"{at_j} {toks}: log_prob is {h.log_prob!r}, the model's log-probability is "
                        f"{expected:.6g} ({'EOS term included' if ended else f'closed at {limit} tokens, no EOS term'}"
                        f"; score {h.score!r})")
            if h.attention is not None:
                rep.close(torch.as_tensor(h.attention), decoder.attention(context, toks, ended), "attention",
                          f"{at_j}: attention against the decoder's last_attention of each step")


def _same_hypotheses(rep: _Report, prop: str, got: list[Hypothesis], expected: list[Hypothesis], what: str) -> None:
    def show(hyps: list[Hypothesis]) -> str:
        return "; ".join(f"{h.tokens} log_prob {h.log_prob:.6g} score {h.score:.6g}" for h in hyps)

    same = len(got) == len(expected) and all(
        a.tokens == b.tokens and math.isclose(a.log_prob, b.log_prob, rel_tol=RTOL, abs_tol=ATOL)
        and math.isclose(a.score, b.score, rel_tol=RTOL, abs_tol=ATOL) for a, b in zip(got, expected))
    rep.require(same, prop, f"{what}: alone [{show(got)}], in the batch [{show(expected)}]")
