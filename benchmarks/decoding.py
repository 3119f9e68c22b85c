"""Decoding cost: beam 5 against greedy over the same work, and batched against one sentence at a time.

- Beam cost: beam 5 over B sentences against greedy over the same B sentences repeated 5 times, with
  5x the greedy batch size, so both run the decoder over the same number of rows per step.
- Batching: beam 5 over B sentences in batches against one sentence at a time.

Sentences are the German side of Multi30k test_2016_flickr; the model is a checkpoint of
configs/translation/multi30k_de_en.yaml (any translation checkpoint works).

    python benchmarks/decoding.py CKPT [--sentences 1000] [--batch-size 64] [--single 200]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit, multi30k

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.text import read_lines


def run(model: TranslationModule, ids: list[list[int]], strategy, batch_size: int) -> float:
    """Seconds to search ``ids`` (already sorted by length) in batches of ``batch_size``."""
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ids), batch_size):
            model.search(model.make_batch(ids[i : i + batch_size]), strategy)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per beam batch")
    parser.add_argument("--single", type=int, default=200, help="sentences decoded one at a time")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stopping", default="early", choices=["early", "exact"], help="beam stopping rule")
    args = parser.parse_args()
    model = TranslationModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()
    lines = [s for s in read_lines(multi30k("test_2016_flickr", "de")) if s.strip()][: args.sentences]
    ids = sorted((model.source_tokenizer.encode(s) for s in lines), key=len)
    beam = model.build_strategy("beam", beam_size=args.beam_size, length_penalty=1.0, stopping=args.stopping)
    greedy = model.build_strategy("greedy")
    k = args.beam_size
    repeated = sorted((x for x in ids for _ in range(k)), key=len)
    run(model, ids[: args.batch_size], beam, args.batch_size)  # warm-up
    beam_s, greedy_s = [], []
    for _ in range(args.repeats):
        beam_s.append(run(model, ids, beam, args.batch_size))
        greedy_s.append(run(model, repeated, greedy, args.batch_size * k))
    b, g = min(beam_s), min(greedy_s)
    n = len(ids)
    emit("decoding", f"beam {k} sentences/s (batch {args.batch_size})", n / b, "sentences/s")
    emit("decoding", f"greedy over {k}x sentences/s (batch {args.batch_size * k})", k * n / g, "rows/s")
    emit("decoding", f"beam {k} / greedy over the sentences x{k}", b / g, "ratio", "<= 1.3", sentences=n,
         stopping=args.stopping)
    few = ids[:: max(1, len(ids) // args.single)][: args.single]  # every length, in sorted order
    batched = min(run(model, few, beam, args.batch_size) for _ in range(args.repeats))
    single = run(model, few, beam, 1)
    emit("decoding", f"beam {k} one at a time", len(few) / single, "sentences/s")
    emit("decoding", f"beam {k} batched / one at a time (sentences/s)", single / batched, "ratio", ">= 10",
         sentences=len(few))


if __name__ == "__main__":
    main()
