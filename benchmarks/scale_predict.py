"""Predict at scale: `seq2seq predict` over 10k, 100k and 1M lines, peak memory and speed.

Each size runs in a fresh process (the shipped dates config and a checkpoint of it, greedy search);
peak RSS comes from the kernel's accounting of that process (wait4), so nothing of this script's own
memory counts. The input is human-written dates from the package's generator, one per line; every
output file is checked to hold one line per input line.

    python benchmarks/scale_predict.py CKPT [--sizes 10000 100000 1000000] [--work DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import REPO, emit, seq2seq

from seq2seq_lightning.data.dates import generate_dates

GOAL_RSS_MB = 1536


def write_input(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        done = 0
        while done < n:
            chunk = min(100_000, n - done)
            f.writelines(ex.source + "\n" for ex in generate_dates(chunk, seed=done))
            done += chunk


def run_predict(ckpt: str, src: Path, out: Path, root: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one `seq2seq predict` process."""
    run = seq2seq("predict", "-c", str(REPO / "configs/translation/dates.yaml"), "--ckpt_path", ckpt,
                  f"--data.init_args.predict_path={src}", "--data.init_args.eval_batch_size=500", "--output",
                  str(out), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                  f"--trainer.default_root_dir={root}")
    return run.seconds, run.peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=None, help="where inputs/outputs go (default: a temp dir)")
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="scale_predict_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    peaks = []
    for n in args.sizes:
        src, out = work / f"in_{n}.txt", work / f"out_{n}.txt"
        if not src.exists():
            write_input(src, n)
        seconds, peak = run_predict(str(Path(args.ckpt).resolve()), src, out, work)
        with out.open("rb") as f:
            lines = sum(1 for _ in f)
        if lines != n:
            raise SystemExit(f"{out} has {lines} lines for {n} inputs")
        peaks.append(peak)
        emit("scale", f"predict {n:,} lines: peak RSS", peak, "MB", f"< {GOAL_RSS_MB}", lines=n)
        emit("scale", f"predict {n:,} lines: sentences/s (wall, start-up included)", n / seconds, "sentences/s",
             lines=n, seconds=round(seconds, 1))
    if len(peaks) > 1:
        emit("scale", f"peak RSS growth {args.sizes[0]:,} -> {args.sizes[-1]:,} lines", peaks[-1] / peaks[0],
             "ratio", "flat (about 1)")


if __name__ == "__main__":
    main()
