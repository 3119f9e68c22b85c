"""Framework overhead: TranslationModule trained by Lightning vs a hand-written PyTorch loop.

Same model (configs/translation/multi30k_de_en.yaml), same Multi30k batches in the same order, same
optimizer (Adam 1e-3), clipping (1.0) and number of steps, in one process. A step's time is the time
between the starts of consecutive steps, so data fetching and the loop's own work count. Runs alternate
(Lightning, hand, Lightning, hand, ...) so that drift of the machine hits both alike. Each repeat gives
one ratio (trimmed-mean step times), and the order of the three runs rotates from one repeat to the
next, so that no variant always runs first; the figures are the median ratio over the repeats and its spread.

    python benchmarks/overhead.py [--steps 60] [--warmup 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from common import emit, multi30k_data, multi30k_model, trimmed_mean


class StepClock(L.Callback):
    """Records the start time of every training step."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


def lightning_run(data, steps: int, progress_bar: bool) -> list[float]:
    torch.manual_seed(0)
    model = multi30k_model(data.tokenizers)
    clock = StepClock()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=progress_bar, gradient_clip_val=1.0, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[clock], accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=data)
    return [b - a for a, b in zip(clock.starts, clock.starts[1:])]


def hand_run(data, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = multi30k_model(data.tokenizers)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pad = model.target_tokenizer.pad_id
    starts = []
    data.trainer = None  # a plain loader: nothing to resume from an earlier Lightning run's loop
    loader = data.train_dataloader()
    for step, batch in enumerate(loader):
        if step == steps:
            break
        starts.append(time.perf_counter())
        logits, _ = model.decoder(batch.target[:, :-1], model.encoder(batch.source, batch.source_lengths))
        gold = batch.target[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), gold.reshape(-1), ignore_index=pad,
                               label_smoothing=model.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    starts.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(starts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="first steps of each run left out")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = multi30k_data()
    data.setup("fit")
    times: dict[str, list[float]] = {"lightning": [], "lightning_bar": [], "hand": []}
    ratios: dict[str, list[float]] = {"lightning": [], "lightning_bar": []}
    variants = {"lightning": lambda: lightning_run(data, args.steps, progress_bar=False),
                "hand": lambda: hand_run(data, args.steps),
                "lightning_bar": lambda: lightning_run(data, args.steps, progress_bar=True)}
    order = list(variants)
    for repeat in range(args.repeats):  # one repeat: the three runs back to back, so drift hits all alike
        turn = order[repeat % 3 :] + order[: repeat % 3]  # each variant takes each place in turn
        run = {name: variants[name]()[args.warmup :] for name in turn}
        run_means = {name: trimmed_mean(values) for name, values in run.items()}
        for name, values in run.items():
            times[name] += values
        for name, repeat_ratios in ratios.items():
            repeat_ratios.append(run_means[name] / run_means["hand"])
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name} {run_means[name] * 1000:.1f} ms" for name in turn), flush=True)
    means = {k: trimmed_mean(v) for k, v in times.items()}
    steps = len(times["hand"])
    emit("overhead", "hand-written loop step time", means["hand"] * 1000, "ms", steps=steps)
    emit("overhead", "Lightning step time", means["lightning"] * 1000, "ms", steps=steps)
    for name, label in (("lightning", "Lightning / hand step time"),
                        ("lightning_bar", "Lightning + progress bar / hand step time")):
        values = ratios[name]
        emit("overhead", label, statistics.median(values), "ratio", "<= 1.02", steps=steps,
             statistic=f"median of {len(values)} repeats", spread=[round(min(values), 4), round(max(values), 4)],
             repeats=[round(v, 4) for v in values])


if __name__ == "__main__":
    main()
