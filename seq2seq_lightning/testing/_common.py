"""What the conformance checks share: tolerances, the failure report, seeding."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import torch
from torch import Tensor

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
