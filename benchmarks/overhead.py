"""Framework overhead: TranslationModule trained by Lightning vs a hand-written PyTorch loop.

Same model (configs/translation/multi30k_de_en.yaml), same Multi30k batches in the same order, same
optimizer (Adam 1e-3), clipping (1.0) and number of steps, in one process. Two designs:

- ``runs`` (the default): whole runs alternate. A step's time is the time between the starts of
  consecutive steps, so data fetching and the loop's own work count. Each repeat runs Lightning without
  a bar, the hand-written loop and Lightning with the rich bar back to back, the order rotating from one
  repeat to the next so that no variant always runs first; each repeat gives one ratio per Lightning
  variant (trimmed-mean step times), and the figures are the median over the repeats and its spread.
- ``steps``: steps alternate. One Lightning fit runs, and beside each of its steps a callback runs
  one step of the hand-written loop on a second, identically initialised model, over its own loader
  of the same batches: just before Lightning's step on even steps, just after it on odd ones. The
  hand step is timed from its batch fetch to the end of its optimizer step; Lightning's step is the
  time between the starts of its consecutive steps (its batch fetch, hooks, logging, forward,
  backward, clipping and optimizer step) less the hand step run within it. Both steps of a pair see
  the same batch within a second of each other, so the machine's drift, which moves whole runs by
  several percent on a shared VM, cancels pair by pair. Fits alternate without and with the bar; each
  gives one ratio per fit. A last run pairs the hand-written loop with itself, always in the same
  order: its ratio, second step of each pair over the first, is what the position in a pair alone
  does, the bias the alternating order cancels.

    python benchmarks/overhead.py [--design runs|steps|both] [--steps 60] [--warmup 10] [--repeats 5]
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

FIGURES = {"lightning": "Lightning / hand step time", "lightning_bar": "Lightning + progress bar / hand step time"}


class StepClock(L.Callback):
    """Records the start time of every training step."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


class HandLoop:
    """The hand-written training loop, a step at a time: a fresh model (seed 0), Adam 1e-3, clipping 1.0."""

    def __init__(self, data) -> None:
        torch.manual_seed(0)
        self.model = multi30k_model(data.tokenizers)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.pad = self.model.target_tokenizer.pad_id
        trainer, data.trainer = data.trainer, None  # a plain loader: no consumed-batch count to resume from
        self.batches = iter(data.train_dataloader())
        data.trainer = trainer

    def step(self) -> None:
        batch = next(self.batches)
        model = self.model
        logits, _ = model.decoder(batch.target[:, :-1], model.encoder(batch.source, batch.source_lengths))
        gold = batch.target[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), gold.reshape(-1), ignore_index=self.pad,
                               label_smoothing=model.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.optimizer.step()


class PairedSteps(L.Callback):
    """Runs one hand-written step beside each Lightning step and times both (the ``steps`` design): on
    even steps just before Lightning's, on odd steps just after it, so that neither loop always goes
    first. Lightning's step time is the time between the starts of its consecutive steps less the
    hand-written step run within it."""

    def __init__(self, hand: HandLoop) -> None:
        self.hand = hand
        self.hand_times: list[float] = []
        self.lightning_times: list[float] = []
        self.step_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lightning_step_done()
        if batch_idx % 2 == 0:
            self._hand_step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx % 2 == 1:
            self._hand_step()

    def on_train_end(self, trainer, pl_module) -> None:
        self._lightning_step_done()

    def _hand_step(self) -> None:
        start = time.perf_counter()
        self.hand.step()
        self.hand_times.append(time.perf_counter() - start)

    def _lightning_step_done(self) -> None:
        now = time.perf_counter()
        if self.step_start is not None:
            self.lightning_times.append(now - self.step_start - self.hand_times[-1])
        self.step_start = now


def trainer(steps: int, progress_bar: bool, callback: L.Callback) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_model_summary=False,
                     enable_progress_bar=progress_bar, gradient_clip_val=1.0, limit_val_batches=0,
                     num_sanity_val_steps=0, callbacks=[callback], accelerator="cpu", devices=1)


def lightning_run(data, steps: int, progress_bar: bool) -> list[float]:
    torch.manual_seed(0)
    model = multi30k_model(data.tokenizers)
    clock = StepClock()
    trainer(steps, progress_bar, clock).fit(model, datamodule=data)
    return [b - a for a, b in itertools.pairwise(clock.starts)]


def hand_run(data, steps: int) -> list[float]:
    loop = HandLoop(data)
    starts = []
    for _ in range(steps):
        starts.append(time.perf_counter())
        loop.step()
    starts.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(starts)]


def paired_run(data, steps: int, progress_bar: bool) -> tuple[list[float], list[float]]:
    """(Lightning step times, hand step times) of one fit in the ``steps`` design, pair by pair."""
    torch.manual_seed(0)
    model = multi30k_model(data.tokenizers)
    pairs = PairedSteps(HandLoop(data))
    trainer(steps, progress_bar, pairs).fit(model, datamodule=data)
    return pairs.lightning_times, pairs.hand_times


def emit_ratios(ratios: dict[str, list[float]], design: str, steps: dict[str, int], what: str) -> None:
    """The median ratio of each Lightning variant, with its spread; ``steps``: the steps each one counts."""
    for name, values in ratios.items():
        emit("overhead", FIGURES[name], statistics.median(values), "ratio", "<= 1.02", steps=steps[name],
             design=design, statistic=f"median of {len(values)} {what}",
             spread=[round(min(values), 4), round(max(values), 4)], repeats=[round(v, 4) for v in values])


def position_check(data, steps: int, warmup: int) -> list[float]:
    """The steps design's own check: a hand-written step paired with another, always in the same
    order; per pair after ``warmup``, the second step's time over the first's."""
    first, second = HandLoop(data), HandLoop(data)
    ratios = []
    for step in range(steps):
        start = time.perf_counter()
        first.step()
        middle = time.perf_counter()
        second.step()
        if step >= warmup:
            ratios.append((time.perf_counter() - middle) / (middle - start))
    return ratios


def alternating_runs(data, args) -> None:
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
        print(f"runs, repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name} {run_means[name] * 1000:.1f} ms" for name in turn), flush=True)
    means = {k: trimmed_mean(v) for k, v in times.items()}
    steps = len(times["hand"])
    emit("overhead", "hand-written loop step time", means["hand"] * 1000, "ms", steps=steps, design="runs")
    emit("overhead", "Lightning step time", means["lightning"] * 1000, "ms", steps=steps, design="runs")
    emit_ratios(ratios, "runs", dict.fromkeys(ratios, steps), "repeats")


def alternating_steps(data, args) -> None:
    ratios: dict[str, list[float]] = {"lightning": [], "lightning_bar": []}
    pair_ratios: dict[str, list[float]] = {"lightning": [], "lightning_bar": []}
    for repeat in range(args.repeats):
        name = ("lightning", "lightning_bar")[repeat % 2]
        lightning, hand = (t[args.warmup :] for t in paired_run(data, args.steps, progress_bar=name == "lightning_bar"))
        ratios[name].append(trimmed_mean(lightning) / trimmed_mean(hand))
        pair_ratios[name] += [a / b for a, b in zip(lightning, hand)]
        print(f"steps, fit {repeat + 1}/{args.repeats} ({name}): Lightning {trimmed_mean(lightning) * 1000:.1f} ms, "
              f"hand {trimmed_mean(hand) * 1000:.1f} ms, ratio {ratios[name][-1]:.4f}", flush=True)
    ratios = {name: values for name, values in ratios.items() if values}
    emit_ratios(ratios, "steps", {name: len(pair_ratios[name]) for name in ratios}, "fits")
    pair_ratios["hand"] = position_check(data, args.steps, args.warmup)
    for name, label in (*FIGURES.items(), ("hand", "hand (second of a pair) / hand (first) step time")):
        values = pair_ratios[name]
        if values:
            quartiles = statistics.quantiles(values, n=4)
            emit("overhead", f"{label}, step by step", statistics.median(values), "ratio", "", design="steps",
                 statistic=f"median of {len(values)} step pairs", quartiles=[round(quartiles[0], 4), round(quartiles[2], 4)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--design", choices=("runs", "steps", "both"), default="runs",
                        help="alternate whole runs, single steps, or do both (runs first)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (per fit in the steps design)")
    parser.add_argument("--warmup", type=int, default=10, help="first steps of each run left out")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (runs design) or fits (steps design)")
    args = parser.parse_args()
    data = multi30k_data()
    data.setup("fit")
    if args.design in ("runs", "both"):
        alternating_runs(data, args)
    if args.design in ("steps", "both"):
        alternating_steps(data, args)


if __name__ == "__main__":
    main()
