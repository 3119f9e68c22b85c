"""Checkpoint averaging: ``seq2seq average CKPT... --output OUT.ckpt``.

The output holds the element-wise mean of the checkpoints' weights (their ``state_dict``s) and is a
normal checkpoint: it loads with ``weights_only=True`` through ``TranslationModule.load_from_checkpoint``
(or ``CaptioningModule``'s) and works with every subcommand that takes ``--ckpt_path`` except resuming a
fit (it carries no optimizer, scheduler, loop or random states).

- Floating tensors are summed in float64 and divided by the number of checkpoints, then cast back to
  their dtype.
- Integer and boolean tensors (counters such as BatchNorm's ``num_batches_tracked``) are taken from the
  first checkpoint, whatever the others hold: they are not averaged.
- Hyperparameters, tokenizers and the data module's saved state come from the first checkpoint. The
  checkpoints must share the architecture (hyperparameters other than decoding and training settings, and
  the ``state_dict``'s keys, shapes and dtypes) and the tokenizers; otherwise an :class:`AverageError`
  names the two files and what differs. Decoding settings (strategy, length limits, ...) and training
  settings (optimizer, scheduler, label smoothing) may differ: the first's are kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seq2seq_lightning.checkpoints import UnsafeCheckpointError, load_checkpoint

#: checkpoint entries that describe a training run, not the model: not written to the average
DROPPED = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "rng_states", "epoch", "global_step")
#: hyperparameters that do not change the network (how to train it), whatever the task
TRAINING_SETTINGS = frozenset({"optimizer", "lr_scheduler", "label_smoothing", "_instantiator"})


class AverageError(ValueError):
    """Checkpoints that cannot be averaged: different architectures or tokenizers."""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decoding_settings(hparams: dict[str, Any]) -> frozenset[str]:
    """The decoding settings the checkpoint's module class declares (``Seq2SeqModule.decoding_settings``)."""
    from seq2seq_lightning.modules.base import Seq2SeqModule

    class_path = hparams.get("_class_path")
    if class_path:
        from seq2seq_lightning.spec import import_class

        try:
            return frozenset(getattr(import_class(class_path), "decoding_settings", Seq2SeqModule.decoding_settings))
        except (ImportError, AttributeError):
            pass
    return Seq2SeqModule.decoding_settings


def compare(first: dict[str, Any], other: dict[str, Any], first_path: str, other_path: str) -> None:
    """Raise :class:`AverageError` unless the two loaded checkpoints can be averaged."""
    pair = f"{first_path} and {other_path}"
    a, b = first.get("hyper_parameters", {}), other.get("hyper_parameters", {})
    for key in sorted(k for k in set(a) | set(b) if "tokenizer" in k):
        ta, tb = a.get(key), b.get(key)
        if ta == tb:
            continue
        sides = sorted(s for s in set(ta) | set(tb) if ta.get(s) != tb.get(s)) \
            if isinstance(ta, dict) and isinstance(tb, dict) else []
        what = f"{' and '.join(sides)} tokenizers" if sides else "tokenizers"
        raise AverageError(f"{pair} have different {what} ({key}); only checkpoints with the same tokenizers "
                           "can be averaged")
    skip = TRAINING_SETTINGS | _decoding_settings(a)
    for key in sorted((set(a) | set(b)) - skip):
        if key.startswith("_") and (key not in a or key not in b):
            continue  # Lightning's metadata (the class path the CLI records), absent from Python-built modules
        if "tokenizer" not in key and a.get(key) != b.get(key):
            raise AverageError(f"{pair} have different architectures: hyperparameter {key!r} is "
                               f"{_short(a.get(key))} in the first and {_short(b.get(key))} in the second")
    sa, sb = first["state_dict"], other["state_dict"]
    missing, extra = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
    if missing or extra:
        parts = [f"only the {side} has {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for side, keys in (("first", missing), ("second", extra)) if keys]
        raise AverageError(f"{pair} have different architectures: state_dict keys differ ({'; '.join(parts)})")
    for key, ta in sa.items():
        tb = sb[key]
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            raise AverageError(f"{pair} have different architectures: {key} is {ta.dtype} {tuple(ta.shape)} in the "
                               f"first and {tb.dtype} {tuple(tb.shape)} in the second")


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The averaged checkpoint of ``paths`` (at least one), as a dict ready for ``torch.save``.

    Checkpoints are read one at a time (``weights_only=True``, on the CPU); memory holds the first and the
    float64 sums.
    """
    if not paths:
        raise AverageError("give at least one checkpoint to average")
    names = [os.fspath(p) for p in paths]
    first = load_checkpoint(names[0])
    if "state_dict" not in first:
        raise AverageError(f"{names[0]} has no state_dict: not a model checkpoint")
    sums = {k: v.to(torch.float64) for k, v in first["state_dict"].items() if v.is_floating_point()}
    for name in names[1:]:
        other = load_checkpoint(name)
        if "state_dict" not in other:
            raise AverageError(f"{name} has no state_dict: not a model checkpoint")
        compare(first, other, names[0], name)
        for key, total in sums.items():
            total += other["state_dict"][key].to(torch.float64)
        del other
    state = {k: (sums[k] / len(names)).to(v.dtype) if k in sums else v.clone()
             for k, v in first["state_dict"].items()}
    out = {k: v for k, v in first.items() if k not in DROPPED and k != "state_dict"}
    out["state_dict"] = state
    out["averaged_from"] = names
    return out


def average(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> Path:
    """Write the average of ``paths`` to ``output`` (under a temporary name, then renamed); returns its path."""
    averaged = average_checkpoints(paths)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        torch.save(averaged, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seq2seq average",
        description="Average the weights of checkpoints of one model (the last epochs of a run, say) into one "
                    "checkpoint that loads and translates like any other. Floating weights are averaged in float64 "
                    "and cast back; integer buffers are taken from the first checkpoint, and so are the "
                    "hyperparameters and tokenizers; optimizer, scheduler and loop states are dropped. Checkpoints "
                    "with different architectures or tokenizers are refused.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints to average (one or more)")
    p.add_argument("--output", required=True, metavar="OUT.ckpt", help="where the averaged checkpoint is written")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``seq2seq average``: 0 on success, 2 with a one-line error on stderr."""
    args = parser().parse_args(argv)
    try:
        target = average(args.checkpoints, args.output)
    except (AverageError, FileNotFoundError, UnsafeCheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"averaged {len(args.checkpoints)} checkpoints into {target}")
    return 0
