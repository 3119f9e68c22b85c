"""Train and test JoeyNMT 2.3.0 on Multi30k de->en on the CPU and print the peer benchmark figures.

Run with the JoeyNMT venv's python (benchmarks/peer/setup_joeynmt.sh makes it), after prepare_data.py:

    nice -n 19 benchmarks/peer/.venv-joeynmt/bin/python benchmarks/peer/run_joeynmt.py \
        --work /tmp/peer_work --epochs 10

Prints one JSON object per line on stdout (JoeyNMT's own log goes to stderr and to
WORK/model/train.log) and appends the same lines to WORK/results.jsonl:

    {"benchmark": "peer", "system": "joeynmt-2.3.0", "figure": ..., "value": ..., "unit": ..., "epochs": N, ...}

How each figure is measured
- train_target_tokens_per_s: target tokens (non-padding positions of the shifted target: every word
  piece plus EOS, no BOS; JoeyNMT's ``batch.ntokens``, the same count as seq2seq-lightning's
  ``gold != pad``) divided by the training wall time. The training time is taken by wrapping
  JoeyNMT's training DataLoader: the clock runs from the first batch request of an epoch to the end
  of that epoch's last batch, so it holds batching and on-the-fly tokenization, forward, backward,
  clipping, the optimizer step and JoeyNMT's periodic logging, and not model building, data
  loading, validation or the final checkpoint. JoeyNMT's built-in validation is switched off
  (``validation_freq`` out of reach); this driver validates at each epoch end itself (``--validate
  epoch``, the default, as Lightning does), outside the clock, so the plateau scheduler and the
  best-checkpoint choice see one validation per epoch like ours.
- decode_sentences_per_s: test sentences / the wall time of one ``joeynmt.prediction.predict`` call
  (beam 5, the config's test batch size) on the already loaded model; it holds tokenizing the
  source, batching, the search and detokenizing, and not loading the model or computing BLEU.
- test_bleu: sacreBLEU (default: 13a tokenization, cased) on the detokenized hypotheses against the
  raw reference lines of the test file, computed with the sacrebleu package outside the timer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "joeynmt-2.3.0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="JoeyNMT 2.3.0 peer benchmark on Multi30k (CPU).")
    p.add_argument("--work", required=True, type=Path, help="work dir prepared by prepare_data.py")
    p.add_argument("--config", type=Path, default=HERE / "joeynmt_de_en.yaml")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10, as ours)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training once this much training time (validation excluded) has passed")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many updates (smoke runs)")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on a random subset of this many pairs (smoke runs)")
    p.add_argument("--dev-lines", type=int, default=None, help="validate on the first N dev pairs only")
    p.add_argument("--test-lines", type=int, default=None, help="decode the first N test sentences only")
    p.add_argument("--validate", choices=["epoch", "none"], default="epoch",
                   help="validate (greedy, val loss + BLEU) at each epoch end, outside the clock; "
                        "drives the lr plateau schedule and best.ckpt")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--skip-train", action="store_true", help="only decode, with WORK/model's checkpoint")
    return p.parse_args(argv)


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before torch is imported

import joeynmt.builders
import torch
import yaml
from joeynmt.config import parse_global_args, set_validation_args
from joeynmt.helpers_for_ddp import get_logger
from joeynmt.prediction import predict, prepare
from joeynmt.training import TrainManager


# -- compatibility shim for torch 2.14.1 (recorded in README.md) ---------------------------------
class _ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """JoeyNMT 2.3.0 passes ``verbose=False``, an argument torch 2.14.1 no longer accepts."""

    def __init__(self, *args, verbose=None, **kwargs):
        super().__init__(*args, **kwargs)


joeynmt.builders.ReduceLROnPlateau = _ReduceLROnPlateau


# -- helpers --------------------------------------------------------------------------------------
def emit(work: Path, epochs: int, figure: str, value, unit: str, **extra) -> None:
    record = {"benchmark": "peer", "system": SYSTEM, "figure": figure, "value": value, "unit": unit,
              "epochs": epochs, **extra}
    line = json.dumps(record)
    print(line, flush=True)
    with open(work / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def head_copy(data_dir: Path, split: str, langs: tuple[str, str], n: int) -> Path:
    """Write the first n lines of data/{split}.{lang} as data/{split}_head{n}.{lang}; return the prefix."""
    prefix = data_dir / f"{split}_head{n}"
    for lang in langs:
        lines = (data_dir / f"{split}.{lang}").read_text(encoding="utf-8").split("\n")[:n]
        Path(f"{prefix}.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return prefix


def load_cfg(args: argparse.Namespace) -> dict:
    work = args.work.resolve()
    text = args.config.read_text(encoding="utf-8").replace("${WORK}", str(work))
    cfg = yaml.safe_load(text)
    data = cfg["data"]
    langs = (data["src"]["lang"], data["trg"]["lang"])
    if not (work / "data" / "manifest.json").is_file():
        raise SystemExit(f"{work}/data is not prepared: run prepare_data.py --work {work} first")
    cfg["training"]["epochs"] = args.epochs
    if args.max_steps is not None:
        cfg["training"]["updates"] = args.max_steps
    if args.train_subset is not None:
        data["sample_train_subset"] = args.train_subset
    if args.dev_lines is not None:
        data["dev"] = str(head_copy(work / "data", "dev", langs, args.dev_lines))
    if args.test_lines is not None:
        data["test"] = str(head_copy(work / "data", "test", langs, args.test_lines))
    return cfg


class TrainClock:
    """Training wall time, summed over epochs, validation excluded (see the module docstring)."""

    def __init__(self) -> None:
        self.train_s = 0.0
        self.valid_s = 0.0
        self.validations = 0
        self.sentences = 0
        self._epoch_start: float | None = None

    def now(self) -> float:
        running = time.perf_counter() - self._epoch_start if self._epoch_start is not None else 0.0
        return self.train_s + running


class TimedLoader:
    """Wraps JoeyNMT's training DataLoader: times each epoch's batches and validates at its end."""

    def __init__(self, loader, clock: TrainClock, on_epoch_end) -> None:
        self._loader, self._clock, self._on_epoch_end = loader, clock, on_epoch_end

    def __getattr__(self, name):  # batch_sampler (set_seed, get_state), dataset, ...
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        clock = self._clock
        clock._epoch_start = time.perf_counter()
        try:
            for batch in self._loader:
                clock.sentences += batch.nseqs
                yield batch
        finally:  # also runs when the trainer breaks out early (max updates / time limit)
            clock.train_s += time.perf_counter() - clock._epoch_start
            clock._epoch_start = None
        self._on_epoch_end()  # only after a complete epoch


def train(cfg: dict, args: argparse.Namespace, logger) -> dict:
    gargs = parse_global_args(cfg, rank=0, mode="train")
    model, train_data, dev_data, _ = prepare(gargs, rank=0, mode="train")
    trainer = TrainManager(
        model=model, model_dir=gargs.model_dir, device=gargs.device, n_gpu=gargs.n_gpu, rank=0,
        num_workers=gargs.num_workers, autocast=gargs.autocast, seed=gargs.seed,
        train_args=gargs.train, dev_args=set_validation_args(gargs.test),
    )
    clock = TrainClock()

    def on_epoch_end() -> None:
        if args.validate == "epoch":
            start = time.perf_counter()
            trainer._validate(dev_data)  # greedy; steps the plateau scheduler; writes best.ckpt
            clock.valid_s += time.perf_counter() - start
            clock.validations += 1

    make_iter = train_data.make_iter
    train_data.make_iter = lambda **kw: TimedLoader(make_iter(**kw), clock, on_epoch_end)

    if args.minutes is not None:
        limit_s = args.minutes * 60.0
        train_step = trainer._train_step

        def timed_step(batch):
            out = train_step(batch)
            if clock.now() >= limit_s:
                trainer.stats.is_max_update = True  # the loop stops after this update
            return out

        trainer._train_step = timed_step

    trainer.train_and_validate(train_data=train_data, valid_data=dev_data)
    n_train = len(train_data.indices) if train_data.random_subset <= 0 else train_data.random_subset
    return {
        "tokens": trainer.stats.total_tokens,
        "steps": trainer.stats.steps,
        "sentences": clock.sentences,
        "epochs_done": clock.sentences / max(n_train, 1),
        "train_s": clock.train_s,
        "valid_s": clock.valid_s,
        "validations": clock.validations,
        "train_pairs": n_train,
        "threads": torch.get_num_threads(),
    }


def decode(cfg: dict, args: argparse.Namespace, logger) -> dict:
    gargs = parse_global_args(cfg, rank=0, mode="test")
    # builds the model and loads best.ckpt (else the latest) from model_dir; not timed
    model, _, _, test_data = prepare(gargs, rank=0, mode="test")
    test_args = gargs.test._replace(eval_metrics=[])  # BLEU is computed below, outside the timer
    start = time.perf_counter()
    result = predict(
        model=model, data=test_data, device=gargs.device, n_gpu=gargs.n_gpu, rank=0,
        compute_loss=False, normalization=gargs.train.normalization, num_workers=gargs.num_workers,
        args=test_args, autocast=gargs.autocast,
    )
    seconds = time.perf_counter() - start
    hyps = result[2]

    import sacrebleu

    trg = cfg["data"]["trg"]["lang"]
    ref_lines = Path(f"{cfg['data']['test']}.{trg}").read_text(encoding="utf-8").split("\n")[: len(hyps)]
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hyps, [ref_lines])
    out = args.work / f"test.hyps.{trg}"
    out.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    ckpt = "best.ckpt" if (gargs.model_dir / "best.ckpt").is_file() else "latest"
    return {"sentences": len(hyps), "seconds": seconds, "bleu": score.score,
            "signature": str(bleu.get_signature()), "checkpoint": ckpt,
            "beam": test_args.beam_size, "batch_size": test_args.batch_size}


def main(args: argparse.Namespace) -> int:
    args.work = args.work.resolve()
    torch.set_num_threads(args.threads)
    cfg = load_cfg(args)
    model_dir = Path(cfg["model_dir"])
    if args.skip_train:
        if not model_dir.is_dir():
            raise SystemExit(f"--skip-train: no model in {model_dir}")
    else:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        model_dir.mkdir(parents=True)
        (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    logger = get_logger("", log_file=(model_dir / ("test.log" if args.skip_train else "train.log")).as_posix())
    partial = {}
    if args.max_steps is not None or args.minutes is not None or args.train_subset is not None:
        partial["note"] = "partial training run (max-steps/minutes/subset): not a full-epoch figure"

    E = args.epochs
    if not args.skip_train:
        t = train(cfg, args, logger)
        common = {"steps": t["steps"], "epochs_done": round(t["epochs_done"], 4), "threads": t["threads"], **partial}
        emit(args.work, E, "train_target_tokens_per_s", round(t["tokens"] / t["train_s"], 1), "tokens/s", **common)
        emit(args.work, E, "train_sentences_per_s", round(t["sentences"] / t["train_s"], 2), "sentences/s", **common)
        emit(args.work, E, "train_seconds", round(t["train_s"], 2), "s", **common)
        emit(args.work, E, "train_seconds_per_epoch", round(t["train_s"] / max(t["epochs_done"], 1e-9), 1), "s",
             extrapolated=t["epochs_done"] < 1, **common)
        emit(args.work, E, "validation_seconds", round(t["valid_s"], 2), "s", validations=t["validations"], **common)
    d = decode(cfg, args, logger)
    extra = {"sentences": d["sentences"], "beam": d["beam"], "batch_size": d["batch_size"],
             "threads": torch.get_num_threads(), "checkpoint": d["checkpoint"], **partial}
    emit(args.work, E, "decode_sentences_per_s", round(d["sentences"] / d["seconds"], 2), "sentences/s", **extra)
    emit(args.work, E, "decode_seconds", round(d["seconds"], 2), "s", **extra)
    emit(args.work, E, "test_bleu", round(d["bleu"], 2), "BLEU", signature=d["signature"], **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
