"""Single checkpoints against their weight average and against their ensemble: test BLEU (and sentences/s).

    python benchmarks/ensemble.py -c configs/translation/multi30k_de_en.yaml \\
        --average run1/epoch=9.ckpt run1/epoch=10.ckpt run1/epoch=11.ckpt \\
        --ensemble run1/best.ckpt run2/best.ckpt [--beam-size 5] [--sentences N]

``--average``: checkpoints of one run (the last epochs, say), averaged with ``seq2seq average``'s code;
``--ensemble``: checkpoints sharing a target tokenizer (two seeds, say), decoded as one
``seq2seq_lightning.Ensemble``. Every checkpoint named is also scored alone. The test split is the config's
(its data module, with the first checkpoint's tokenizers); beam search with ``--beam-size`` and the first
checkpoint's other strategy settings. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import emit
from int8 import bleu, test_pairs

from seq2seq_lightning import Ensemble, TranslationModule
from seq2seq_lightning.export.average import average
from seq2seq_lightning.search.beam import BeamSearch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--average", nargs="+", default=[], metavar="CKPT", help="checkpoints to average")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CKPT", help="checkpoints to ensemble")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=0, help="first N test sentences (0: all)")
    args = parser.parse_args()
    paths = list(dict.fromkeys(args.average + args.ensemble))
    if not paths:
        parser.error("give --average or --ensemble checkpoints (or both)")
    first = TranslationModule.load_from_checkpoint(paths[0], map_location="cpu").eval()
    pairs = test_pairs(args.config, first.hparams.tokenizers)
    if args.sentences:
        pairs = pairs[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    strategy = first.build_strategy(None if isinstance(first.strategy, BeamSearch) else "beam",
                                    beam_size=args.beam_size)
    tag, extra = f"beam {args.beam_size}", {"sentences": len(sources), "config": args.config}

    def score(name: str, model: TranslationModule | Ensemble, **more: object) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = model.translate(sources, strategy)
        seconds = time.perf_counter() - start
        value = bleu(outputs, refs)
        emit("ensemble", f"{name} {tag} test BLEU", value, "BLEU", **extra, **more)
        emit("ensemble", f"{name} {tag} sentences/s", len(sources) / seconds, "sentences/s", **extra, **more)
        return value

    single = {p: score(f"single {'/'.join(Path(p).parts[-3:])}",
                       TranslationModule.load_from_checkpoint(p, map_location="cpu"), checkpoint=p) for p in paths}
    if args.average:
        with tempfile.TemporaryDirectory() as tmp:
            out = average(args.average, Path(tmp) / "average.ckpt")
            value = score(f"average of {len(args.average)}", TranslationModule.load_from_checkpoint(out),
                          checkpoints=args.average)
        emit("ensemble", f"average - best single {tag} test BLEU", value - max(single[p] for p in args.average),
             "BLEU", ">= 0", **extra)
    if args.ensemble:
        value = score(f"ensemble of {len(args.ensemble)}", Ensemble(args.ensemble), checkpoints=args.ensemble)
        emit("ensemble", f"ensemble - best single {tag} test BLEU", value - max(single[p] for p in args.ensemble),
             "BLEU", ">= 0", **extra)


if __name__ == "__main__":
    main()
