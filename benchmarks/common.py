"""Shared helpers of the benchmark scripts: one JSON line per figure, the machine, Multi30k paths."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("MULTI30K_DIR", REPO.parent / "shared" / "data" / "multi30k"))


def machine() -> str:
    """A short description of where the figures were measured."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def emit(benchmark: str, figure: str, value: float, unit: str, goal: str = "", **extra: object) -> None:
    """Print one figure as a JSON line (benchmark, figure, value, unit, goal, machine, ...)."""
    row = {"benchmark": benchmark, "figure": figure, "value": round(float(value), 4), "unit": unit, "goal": goal}
    row.update(extra)
    row["machine"] = machine()
    print(json.dumps(row), flush=True)


@dataclass
class CliRun:
    """One finished `seq2seq` process: its output (stdout and stderr together), wall seconds, peak
    RSS in MB (the kernel's accounting of that process alone) and the wall-clock time it started."""

    output: str
    seconds: float
    peak_rss_mb: float
    started: float


def seq2seq(*args: str, env: dict[str, str] | None = None) -> CliRun:
    """Run the `seq2seq` console script from the repository root; stop with its output's tail if it fails."""
    cmd = [str(Path(sys.executable).parent / "seq2seq"), *args]
    started, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()  # read before waiting: a full pipe would block the child
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return CliRun(output, seconds, usage.ru_maxrss / 1024, started)


def trimmed_mean(values: list[float], trim: float = 0.1) -> float:
    """Mean of the values with the highest and lowest ``trim`` share dropped (robust to stray pauses)."""
    ordered = sorted(values)
    k = int(len(ordered) * trim)
    kept = ordered[k : len(ordered) - k] or ordered
    return statistics.fmean(kept)


def multi30k(split: str, lang: str) -> Path:
    """Path of a Multi30k split file, e.g. multi30k("test_2016_flickr", "de")."""
    path = MULTI30K / f"{split}.{lang}.gz"
    if not path.exists():
        raise SystemExit(f"Multi30k file {path} not found; set MULTI30K_DIR to the folder holding it")
    return path


def multi30k_data(source_lang: str = "de", target_lang: str = "en", **kwargs: object):
    """The TranslationDataModule of configs/translation/multi30k_de_en.yaml (BPE 8000, batch 128)."""
    from seq2seq_lightning.data.translation import TranslationDataModule

    options = {"train_path": str(MULTI30K / "train.{lang}.gz"), "val_path": str(MULTI30K / "val.{lang}.gz"),
               "test_path": str(MULTI30K / "test_2016_flickr.{lang}.gz"), "source_lang": source_lang,
               "target_lang": target_lang, "tokenizer": "bpe", "vocab_size": 8000, "batch_size": 128,
               "eval_batch_size": 200, "max_source_len": 100, "max_target_len": 100}
    options.update(kwargs)
    multi30k("train", source_lang)
    return TranslationDataModule(**options)


def multi30k_model(tokenizers: dict[str, str], config: str = "configs/translation/multi30k_de_en.yaml"):
    """A fresh TranslationModule with the architecture, loss and strategy of a shipped config."""
    import yaml

    from seq2seq_lightning import TranslationModule

    init = yaml.safe_load((REPO / config).read_text())["model"]["init_args"]
    keep = {k: init[k] for k in ("encoder", "decoder", "strategy", "label_smoothing") if k in init}
    return TranslationModule(tokenizers=tokenizers, **keep)


def checkpoint_parser(doc: str | None, *, sentences: int, beam_size: int, repeats: int,
                      rounds_of: str) -> argparse.ArgumentParser:
    """The options of the benchmarks that decode a checkpoint's test split in alternating rounds:
    ``-c/--config``, ``--ckpt_path``, ``--sentences``, ``--beam-size`` and ``--repeats`` (rounds per
    ``rounds_of``), with these defaults."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="the checkpoint's training config (its data section)")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--sentences", type=int, default=sentences, help="first N test sentences (0: all)")
    parser.add_argument("--beam-size", type=int, default=beam_size)
    parser.add_argument("--repeats", type=int, default=repeats, help=f"rounds per {rounds_of}, alternating")
    return parser
