"""Multi30k quality: train a shipped config with `seq2seq fit`, then `seq2seq test` its best checkpoint.

Prints the training wall time and peak RSS of the fit process, and test/bleu (sacreBLEU, cased, on
test_2016_flickr) with beam 5 (the config's strategy) and with greedy search.

    python benchmarks/multi30k_quality.py [--config configs/translation/multi30k_de_en.yaml] [--root DIR]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from common import REPO, emit, seq2seq


def test_bleu(out: str) -> float:
    match = re.search(r"test/bleu\s*│\s*([0-9.]+)", out)
    if not match:
        raise SystemExit(f"no test/bleu in the output:\n{out[-2000:]}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/translation/multi30k_de_en.yaml")
    parser.add_argument("--root", default="runs/multi30k_quality")
    args = parser.parse_args()
    common = ["-c", args.config, f"--trainer.default_root_dir={args.root}"]
    fit = seq2seq("fit", *common, "--trainer.enable_progress_bar=false")
    best = max((REPO / args.root).rglob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    name = Path(args.config).stem
    emit("multi30k", f"{name}: fit wall time (12 epochs, validation each epoch)", fit.seconds / 60, "min", "<= 60")
    emit("multi30k", f"{name}: fit peak RSS", fit.peak_rss_mb, "MB")
    for strategy, goal in (("beam", ">= 30"), ("greedy", "")):
        out = seq2seq("test", *common, "--ckpt_path", str(best), "--trainer.logger=false",
                            "--trainer.enable_progress_bar=false", *(["--model.strategy=greedy"] if strategy == "greedy" else [])).output
        emit("multi30k", f"{name}: test/bleu, {'beam 5' if strategy == 'beam' else 'greedy'}", test_bleu(out), "BLEU",
             goal, checkpoint=best.name)


if __name__ == "__main__":
    main()
