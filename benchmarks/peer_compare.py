"""seq2seq-lightning against JoeyNMT 2.3.0 on Multi30k de->en, side by side in one run, on the CPU.

Both systems train the same recurrent model (see benchmarks/peer/README.md for what matches and what
cannot) for the same number of epochs with the same threads, then decode test_2016_flickr with beam 5:

- training target tokens/s (and sentences/s), the clock running from an epoch's first batch to the
  end of its last step (validation and start-up left out, for both);
- beam-5 decoding sentences/s (batch 200, model already loaded, detokenized text out);
- sacreBLEU (13a, cased) of the beam-5 output against the raw references, both with the sacrebleu
  package, after the same number of epochs (the equal training budget).

Needs the JoeyNMT venv (benchmarks/peer/setup_joeynmt.sh) and its data (benchmarks/peer/prepare_data.py).

    python benchmarks/peer_compare.py --work /tmp/peer_work [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

import lightning as L
from common import REPO, emit, multi30k, seq2seq

JOEY_PYTHON = REPO / "benchmarks/peer/.venv-joeynmt/bin/python"
UNITS = {"train_target_tokens_per_s": "tokens/s", "train_sentences_per_s": "sentences/s", "train_seconds": "s",
         "decode_sentences_per_s": "sentences/s", "test_bleu": "BLEU"}


class TrainClock(L.Callback):
    """Sums training time (first batch start to last batch end of each epoch) and target tokens."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = self.sentences = 0
        self._first: float | None = None
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._first = self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._first is None:
            self._first = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last = time.perf_counter()
        self.tokens += int((batch.target_lengths - 1).sum())  # gold positions: tokens + EOS
        self.sentences += len(batch.target_lengths)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._first is not None and self._last is not None:
            self.seconds += self._last - self._first

    def on_train_end(self, trainer, pl_module) -> None:
        print("TRAIN_CLOCK " + json.dumps({"seconds": self.seconds, "tokens": self.tokens,
                                           "sentences": self.sentences}), flush=True)


def run_ours(work: Path, epochs: int, threads: int, decode_only: bool = False) -> dict[str, float]:
    root = work / "ours"
    if decode_only:
        return decode_ours(next(root.rglob("last.ckpt")), threads)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), OMP_NUM_THREADS=str(threads))
    run = seq2seq("fit", "-c", str(REPO / "configs/translation/multi30k_de_en.yaml"),
                  f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={epochs}", "--trainer.logger=false",
                  "--trainer.enable_progress_bar=false", "--trainer.callbacks+=peer_compare.TrainClock", env=env)
    clock = re.findall(r"TRAIN_CLOCK (\{.*\})", run.output)
    if not clock:
        raise SystemExit(f"our fit printed no training clock:\n{run.output[-3000:]}")
    train = json.loads(clock[-1])
    return {"train_target_tokens_per_s": train["tokens"] / train["seconds"],
            "train_sentences_per_s": train["sentences"] / train["seconds"],
            "train_seconds": train["seconds"], **decode_ours(next(root.rglob("last.ckpt")), threads)}


def decode_ours(ckpt: Path, threads: int) -> dict[str, float]:
    """Beam-5 decoding of the test set with the config's beam (length penalty 1.0, early stopping)."""
    import sacrebleu
    import torch

    from seq2seq_lightning import TranslationModule
    from seq2seq_lightning.data.text import read_lines

    torch.set_num_threads(threads)
    model = TranslationModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    model.batch_size = 200
    sources = read_lines(multi30k("test_2016_flickr", "de"))
    refs = read_lines(multi30k("test_2016_flickr", "en"))
    start = time.perf_counter()
    hyps = model.translate(sources, strategy="beam", beam_size=5, length_penalty=1.0, stopping="early")
    decode = time.perf_counter() - start
    return {"decode_sentences_per_s": len(sources) / decode,
            "test_bleu": sacrebleu.corpus_bleu(hyps, [refs]).score}


def run_joeynmt(work: Path, epochs: int, threads: int, decode_only: bool = False) -> dict[str, float]:
    if not JOEY_PYTHON.exists():
        raise SystemExit(f"{JOEY_PYTHON} not found: run benchmarks/peer/setup_joeynmt.sh first")
    joey = work / "joeynmt"
    subprocess.run([str(JOEY_PYTHON), str(REPO / "benchmarks/peer/prepare_data.py"), "--work", str(joey)],
                   check=True, capture_output=True)
    out = subprocess.run([str(JOEY_PYTHON), str(REPO / "benchmarks/peer/run_joeynmt.py"), "--work", str(joey),
                          "--epochs", str(epochs), "--threads", str(threads),
                          *(["--skip-train"] if decode_only else [])],
                         check=False, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"JoeyNMT run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    figures = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            figures[row["figure"]] = row["value"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2, help="the equal training budget, in epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-only", action="store_true",
                        help="decode and score again with the models an earlier run left in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ours = run_ours(args.work, args.epochs, args.threads, args.decode_only)
    for key, value in ours.items():
        emit("peer", f"seq2seq-lightning {key}", value, UNITS[key], epochs=args.epochs, threads=args.threads)
    joey = run_joeynmt(args.work, args.epochs, args.threads, args.decode_only)
    for key in ours:
        if key in joey:
            emit("peer", f"joeynmt-2.3.0 {key}", joey[key], UNITS[key], epochs=args.epochs, threads=args.threads)
    emit("peer", "beam-5 decoding sentences/s, ours / JoeyNMT",
         ours["decode_sentences_per_s"] / joey["decode_sentences_per_s"], "ratio", ">= 2")
    if not args.decode_only:
        emit("peer", "training target tokens/s, ours / JoeyNMT",
             ours["train_target_tokens_per_s"] / joey["train_target_tokens_per_s"], "ratio", ">= 1")
    emit("peer", f"test BLEU after {args.epochs} epochs, ours - JoeyNMT", ours["test_bleu"] - joey["test_bleu"],
         "BLEU", ">= 0")


if __name__ == "__main__":
    main()
