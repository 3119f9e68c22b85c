"""Data pipeline throughput on Multi30k, and the time from `seq2seq fit` to its first training step.

- tokenizer training (BPE, vocab 8000) per side: sentences/s;
- encoding the training split: tokens/s;
- one epoch of training batches (bucketed sampler + collate, as fit uses them): batches/s and
  the share of padding, against random batching;
- `seq2seq fit -c configs/translation/multi30k_de_en.yaml` from process start to the start of the
  first training step (imports, reading, tokenizer training, encoding, model, logger), with W&B as
  shipped (offline) and with --trainer.logger=false.

    python benchmarks/data_throughput.py
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from common import REPO, emit, multi30k, multi30k_data, seq2seq

from seq2seq_lightning.data.batching import BucketBatchSampler
from seq2seq_lightning.data.text import read_lines
from seq2seq_lightning.data.tokenizer import Tokenizer


class FirstStep(L.Callback):
    """Prints the wall-clock time at the first training step, then stops the run."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        print(f"FIRST_STEP {time.time():.6f}", flush=True)
        trainer.should_stop = True


def padding_share(batches: list[list[int]], lengths: torch.Tensor) -> float:
    real = padded = 0
    for b in batches:
        lens = lengths[b]
        real += int(lens.sum())
        padded += int(lens.max()) * len(b)
    return 1.0 - real / padded


def time_to_first_step(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as root:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
        env.pop("WANDB_MODE", None)
        run = seq2seq("fit", "-c", str(REPO / "configs/translation/multi30k_de_en.yaml"),
                      f"--trainer.default_root_dir={root}", "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
                      "--trainer.num_sanity_val_steps=0", "--trainer.callbacks+=data_throughput.FirstStep", *extra,
                      env=env)
        match = re.search(r"FIRST_STEP ([0-9.]+)", run.output)
        if not match:
            raise SystemExit(f"fit printed no first step:\n{run.output[-3000:]}")
        return float(match.group(1)) - run.started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    for lang in ("de", "en"):
        lines = read_lines(multi30k("train", lang))
        start = time.perf_counter()
        tok = Tokenizer.train(lines, kind="bpe", vocab_size=8000)
        seconds = time.perf_counter() - start
        emit("data", f"BPE tokenizer training ({lang}, 8000)", len(lines) / seconds, "sentences/s",
             seconds=round(seconds, 3))
        start = time.perf_counter()
        ids = tok.encode_batch(lines)
        seconds = time.perf_counter() - start
        emit("data", f"BPE encoding ({lang})", sum(map(len, ids)) / seconds, "tokens/s")

    data = multi30k_data()
    start = time.perf_counter()
    data.setup("fit")
    emit("data", "datamodule setup (read, train 2 tokenizers, encode train+val)", time.perf_counter() - start, "s")
    loader = data.train_dataloader()
    start = time.perf_counter()
    n_batches = n_tokens = 0
    for batch in loader:
        n_batches += 1
        n_tokens += int(batch.target_lengths.sum())
    seconds = time.perf_counter() - start
    emit("data", "training batches (bucketed sampler + collate, 1 worker-less epoch)", n_batches / seconds,
         "batches/s", tokens_per_s=round(n_tokens / seconds))
    dataset = data.dataset("train")
    lengths = torch.as_tensor(dataset.lengths)
    bucketed = BucketBatchSampler(dataset.lengths, data.batch_size, shuffle=True, seed=0).batches()
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [random_order[i : i + data.batch_size] for i in range(0, len(random_order), data.batch_size)]
    emit("data", "padding share, bucketed batches", padding_share(bucketed, lengths), "fraction")
    emit("data", "padding share, random batches", padding_share(random_batches, lengths), "fraction")

    emit("data", "seq2seq fit: start to first training step (W&B offline)", time_to_first_step([]), "s")
    emit("data", "seq2seq fit: start to first training step (--trainer.logger=false)",
         time_to_first_step(["--trainer.logger=false"]), "s")


if __name__ == "__main__":
    main()
