"""int8 against float32 on the CPU: beam-search sentences/s and test BLEU of one translation checkpoint.

Both modules live in one process and translate the config's test split in turns (float32, int8,
float32, ...), ``--repeats`` times each; the figures are the best round of each (the least disturbed by
other processes), with every round's time in ``rounds``. Then one int8 round (or ``--profile-sentences``
of it) runs under torch.profiler: the ops that take the decode time, printed as a table on stderr and as
the top ``--top`` figures.

    python benchmarks/int8.py -c configs/translation/dates.yaml --ckpt_path CKPT [--sentences 1000]
    python benchmarks/int8.py -c configs/translation/multi30k_de_en.yaml --ckpt_path CKPT \
        --goal-speedup ">= 1.5" --goal-bleu ">= -0.3"

The test split is the config's (its data module, with the checkpoint's tokenizers); the strategy is the
checkpoint's configured one with ``beam_size`` set (beam search with its length penalty), or beam search
from its defaults when the configured strategy is not beam search. Prints one JSON line per figure.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from common import checkpoint_parser, emit
from torchmetrics.text import SacreBLEUScore

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.search.beam import BeamSearch


def test_pairs(config: str, tokenizers: dict[str, str]) -> list[tuple[str, str]]:
    """The config's test split as (source, reference) pairs, read by its data module."""
    from lightning.pytorch import LightningDataModule

    from seq2seq_lightning.building import build

    with open(config, encoding="utf-8") as f:
        spec = yaml.safe_load(f)["data"]
    spec = {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {}, tokenizers=tokenizers)}
    data = build(spec, LightningDataModule, what="data")
    return data.load_pairs("test")


def bleu(outputs: list[str], references: list[str]) -> float:
    metric = SacreBLEUScore(tokenize="13a")
    metric.update(outputs, [[r] for r in references])
    return float(metric.compute()) * 100.0


def timed(model: TranslationModule, sources: list[str], strategy: Any) -> tuple[list[str], float]:
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = model.translate(sources, strategy)
    return outputs, time.perf_counter() - start


def op_shares(model: TranslationModule, sources: list[str], strategy: Any, table_rows: int = 0) -> dict[str, float]:
    """Self CPU time share of every op over one translation of ``sources`` under torch.profiler, largest
    first; with ``table_rows``, the profiler's table of that many ops goes to stderr."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        model.translate(sources, strategy)
    events = prof.key_averages()
    if table_rows:
        print(events.table(sort_by="self_cpu_time_total", row_limit=table_rows), file=sys.stderr)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {e.key: e.self_cpu_time_total / total for e in ranked}


def profile(model: TranslationModule, sources: list[str], strategy: Any, top: int) -> list[tuple[str, float]]:
    """Self CPU time share of the top ops over one translation of ``sources`` (table on stderr)."""
    return list(op_shares(model, sources, strategy, table_rows=top + 10).items())[:top]


def main() -> None:
    parser = checkpoint_parser(__doc__, sentences=0, beam_size=5, repeats=3, rounds_of="model")
    parser.add_argument("--batch-size", type=int, default=0, help="sentences per batch (0: the checkpoint's)")
    parser.add_argument("--profile-sentences", type=int, default=300, help="int8 sentences profiled (0: none)")
    parser.add_argument("--top", type=int, default=8, help="ops reported from the profile")
    parser.add_argument("--goal-speedup", default="", help="goal of the int8 / float32 ratio (Multi30k: '>= 1.5')")
    parser.add_argument("--goal-bleu", default="", help="goal of the BLEU difference (Multi30k: '>= -0.3')")
    args = parser.parse_args()

    fp32 = TranslationModule.load_from_checkpoint(args.ckpt_path, map_location="cpu").eval()
    int8 = TranslationModule.load_from_checkpoint(args.ckpt_path, map_location="cpu").quantize("int8")
    for model in (fp32, int8):
        if args.batch_size:
            model.batch_size = args.batch_size
    pairs = test_pairs(args.config, fp32.hparams.tokenizers)
    if args.sentences:
        pairs = pairs[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    if isinstance(fp32.strategy, BeamSearch):
        strategy = fp32.build_strategy(None, beam_size=args.beam_size)
    else:
        strategy = fp32.build_strategy("beam", beam_size=args.beam_size)
    tag = f"{Path(args.config).stem}: beam {args.beam_size}"
    fp32.translate(sources[:32], strategy)  # warm-up
    int8.translate(sources[:32], strategy)
    rounds: dict[str, list[float]] = {"float32": [], "int8": []}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, model in (("float32", fp32), ("int8", int8)):
            outputs[name], seconds = timed(model, sources, strategy)
            rounds[name].append(seconds)
    n = len(sources)
    speed = {name: n / min(times) for name, times in rounds.items()}
    scores = {name: bleu(outputs[name], refs) for name in outputs}
    same = sum(a == b for a, b in zip(outputs["float32"], outputs["int8"])) / n
    extra = {"sentences": n, "checkpoint": args.ckpt_path, "config": args.config,
             "batch_size": fp32.batch_size, "layers": int8.quantized_layers}
    for name in ("float32", "int8"):
        emit("int8", f"{name} {tag} sentences/s", speed[name], "sentences/s",
             rounds=[round(t, 3) for t in rounds[name]], **extra)
        emit("int8", f"{name} {tag} test BLEU", scores[name], "BLEU", **extra)
    emit("int8", f"int8 / float32 {tag} sentences/s", speed["int8"] / speed["float32"], "ratio", args.goal_speedup,
         **extra)
    emit("int8", f"int8 - float32 {tag} test BLEU", scores["int8"] - scores["float32"], "BLEU", args.goal_bleu,
         **extra)
    emit("int8", f"int8 outputs equal to float32 ({tag})", same, "fraction", **extra)
    if args.profile_sentences:
        few = sources[: args.profile_sentences]
        for op, share in profile(int8, few, strategy, args.top):
            emit("int8", f"int8 {tag} profile: self CPU share of {op}", share, "fraction", sentences=len(few),
                 checkpoint=args.ckpt_path)


if __name__ == "__main__":
    main()
