"""ONNX Runtime against PyTorch float32 on the CPU: output agreement and sentences/s of one checkpoint.

Greedy search and beam search (the checkpoint's own beam search with ``--beam-size``, or beam search
from its defaults) each run on both. The checkpoint is exported (``export_checkpoint``, timed) to a
temporary folder; then the PyTorch module and :class:`~seq2seq_lightning.export.OnnxTranslator` live in
one process and translate the config's test split in turns (float32, onnx, float32, ...), ``--repeats``
times each, with the same number of threads; the speed figures are the best round of each (the least
disturbed by other processes), with every round's time in ``rounds``. Agreement is the share of
identical output strings; each disagreement is printed with both outputs' log-probabilities under the
PyTorch model (forced decoding), which tells a near-tie from a real difference.

    python benchmarks/onnx_runtime.py -c configs/translation/dates.yaml --ckpt_path CKPT [--sentences 300]

Prints one JSON line per figure (append them to benchmarks/results/onnx.jsonl). The script is not
named onnx.py: run from this folder, that name would shadow the onnx package.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import torch
import yaml
from common import checkpoint_parser, emit

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.export import OnnxTranslator
from seq2seq_lightning.export.onnx_export import export_checkpoint
from seq2seq_lightning.search.beam import BeamSearch


def test_pairs(config: str, tokenizers: dict[str, str]) -> list[tuple[str, str]]:
    """The config's test split as (source, reference) pairs, read by its data module."""
    from lightning.pytorch import LightningDataModule

    from seq2seq_lightning.building import build

    with open(config, encoding="utf-8") as f:
        spec = yaml.safe_load(f)["data"]
    spec = {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {}, tokenizers=tokenizers)}
    return build(spec, LightningDataModule, what="data").load_pairs("test")


def timed(translator: Any, sources: list[str], strategy: str | None, kwargs: dict[str, Any]) -> tuple[list[str], float]:
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = translator.translate(sources, strategy, **kwargs)
    return outputs, time.perf_counter() - start


def main() -> None:
    parser = checkpoint_parser(__doc__, sentences=300, beam_size=4, repeats=3, rounds_of="runtime")
    parser.add_argument("--threads", type=int, default=0, help="threads of both runtimes (0: torch's default)")
    parser.add_argument("--goal-agreement", default=">= 0.99")
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    model = TranslationModule.load_from_checkpoint(args.ckpt_path, map_location="cpu").eval()
    pairs = test_pairs(args.config, model.hparams.tokenizers)
    if args.sentences:
        pairs = pairs[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    folder = tempfile.mkdtemp(prefix="onnx_bench_")
    start = time.perf_counter()
    export_checkpoint(args.ckpt_path, folder)
    export_seconds = time.perf_counter() - start
    onnx = OnnxTranslator(folder, threads=threads)
    n = len(sources)
    extra = {"sentences": n, "checkpoint": args.ckpt_path, "config": args.config, "threads": threads,
             "batch_size": model.batch_size, "load_average": round(os.getloadavg()[0], 2)}  # 1 min, at the start
    emit("onnx", "seq2seq export wall time (export and verify)", export_seconds, "s", **extra)
    # beam search: the configured one with beam_size set (its length penalty and stopping kept) when the
    # checkpoint decodes with beam search, else beam search from its defaults
    beam = None if isinstance(model.strategy, BeamSearch) else "beam"
    for strategy, kwargs, tag in (("greedy", {}, "greedy"), (beam, {"beam_size": args.beam_size},
                                                             f"beam {args.beam_size}")):
        runtimes = {"float32": model, "onnx": onnx}
        for translator in runtimes.values():
            translator.translate(sources[:32], strategy, **kwargs)  # warm-up
        rounds: dict[str, list[float]] = {name: [] for name in runtimes}
        outputs: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, translator in runtimes.items():
                outputs[name], seconds = timed(translator, sources, strategy, kwargs)
                rounds[name].append(seconds)
        speed = {name: n / min(times) for name, times in rounds.items()}
        for name in runtimes:
            emit("onnx", f"{name} {tag} sentences/s", speed[name], "sentences/s",
                 rounds=[round(t, 3) for t in rounds[name]], **extra)
            exact = sum(o == r for o, r in zip(outputs[name], refs)) / n
            emit("onnx", f"{name} {tag} exact match with the reference", exact, "fraction", **extra)
        emit("onnx", f"onnx / float32 {tag} sentences/s", speed["onnx"] / speed["float32"], "ratio", **extra)
        differ = [i for i in range(n) if outputs["onnx"][i] != outputs["float32"][i]]
        emit("onnx", f"onnx outputs equal to float32 ({tag})", 1 - len(differ) / n, "fraction", args.goal_agreement,
             differ=len(differ), **extra)
        if differ:  # how close each disagreement is: both outputs scored by the PyTorch model
            src = [sources[i] for i in differ]
            torch_scores = model.score(src, [outputs["float32"][i] for i in differ])
            onnx_scores = model.score(src, [outputs["onnx"][i] for i in differ])
            for i, a, b in zip(differ, torch_scores, onnx_scores):
                print(json.dumps({"benchmark": "onnx", "disagreement": tag, "source": sources[i],
                                  "float32": outputs["float32"][i], "onnx": outputs["onnx"][i],
                                  "float32_log_prob": round(a, 6), "onnx_log_prob": round(b, 6)},
                                 ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
