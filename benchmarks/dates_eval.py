"""Exact match of a dates checkpoint on the held-out test split, per style, with a given strategy.

    python benchmarks/dates_eval.py CKPT [--strategy beam --beam-size 4]

Prints one JSON line per figure (benchmark, figure, value, unit, goal).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--strategy", default="beam")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--num-test", type=int, default=2000, help="must match the training run's split")
    args = parser.parse_args()
    model = TranslationModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()
    test = DatesDataModule(num_test=args.num_test).examples("test")
    kwargs = {"beam_size": args.beam_size} if args.strategy == "beam" else {}
    start = time.perf_counter()
    outputs = model.translate([ex.source for ex in test], strategy=args.strategy, **kwargs)
    seconds = time.perf_counter() - start
    per_style: dict[str, list[bool]] = defaultdict(list)
    for ex, out in zip(test, outputs):
        per_style[ex.style].append(out == ex.target)
    overall = sum(sum(v) for v in per_style.values()) / len(test)

    def emit(figure: str, value: float, unit: str, goal: str) -> None:
        print(json.dumps({"benchmark": "dates_exact_match", "figure": figure, "value": round(value, 4),
                          "unit": unit, "goal": goal}), flush=True)

    emit(f"exact_match/{args.strategy}", overall, "fraction", ">= 0.99")
    for style, hits in sorted(per_style.items()):
        emit(f"exact_match/{args.strategy}/{style}", sum(hits) / len(hits), "fraction", ">= 0.99")
    emit("sentences_per_second", len(test) / seconds, "sentences/s", "")
    wrong = [(ex.source, ex.target, out) for ex, out in zip(test, outputs) if out != ex.target]
    for source, target, out in wrong[:10]:
        print(json.dumps({"wrong": source, "expected": target, "got": out}, ensure_ascii=False))


if __name__ == "__main__":
    main()
