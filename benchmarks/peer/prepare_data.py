"""Prepare Multi30k for the JoeyNMT peer benchmark: plain-text copies and pre-learned BPE models.

Writes into ``WORK/data/``:

- ``{train,dev,test}.{src,trg}``: the gzip'd Multi30k files decompressed verbatim (cased raw text, one
  sentence per line; JoeyNMT's ``PlaintextDataset`` reads ``<path>.<lang>``);
- ``spm.{lang}.model`` / ``spm.{lang}.vocab``: one SentencePiece BPE model per side, learned offline
  from that side's training text, ``--vocab-size`` pieces *including* the four special tokens
  (``<unk>`` 0, ``<pad>`` 1, ``<s>`` 2, ``</s>`` 3: JoeyNMT's default special ids), so the model's
  vocabulary has exactly ``--vocab-size`` entries, like seq2seq-lightning's (8000 incl. specials);
- ``vocab.{lang}.txt``: the pieces in id order, for JoeyNMT's ``voc_file`` (so JoeyNMT's vocabulary
  is the SentencePiece vocabulary, not one recounted from the data);
- ``manifest.json``: line counts, vocabulary sizes and the SentencePiece options used.

SentencePiece is used (not subword-nmt) because it is closest to seq2seq-lightning's tokenizer: BPE
on raw, untokenized text with ``▁`` marking spaces (HF ``Metaspace``), lossless detokenization, no
Moses pre-tokenization. ``normalization_rule_name=identity`` keeps the text cased and unnormalized;
``character_coverage=1.0`` keeps every training character (HF BPE also keeps its whole alphabet).

Run with the JoeyNMT venv (it has sentencepiece):
    nice -n 19 benchmarks/peer/.venv-joeynmt/bin/python benchmarks/peer/prepare_data.py --work /tmp/peer_work
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "multi30k"
SPLITS = {"train": "train", "dev": "val", "test": "test_2016_flickr"}  # JoeyNMT name -> Multi30k name
SPECIALS = {"unk": (0, "<unk>"), "pad": (1, "<pad>"), "bos": (2, "<s>"), "eos": (3, "</s>")}
# Characters that str.splitlines() (used by JoeyNMT's read_list_from_file) treats as line breaks;
# one inside a sentence would silently misalign source and target.
LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def read_gz_lines(path: Path) -> list[str]:
    """Lines split on '\\n' only, as seq2seq-lightning reads them (one trailing '\\r' dropped)."""
    with gzip.open(path, "rb") as handle:
        lines = [raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8") for raw in handle]
    return lines


def write_split(lines: list[str], out: Path) -> None:
    bad = [i + 1 for i, line in enumerate(lines) if any(c in line for c in LINE_BREAKS)]
    if bad:
        raise SystemExit(f"{out.name}: lines {bad[:10]} hold a character that splitlines() breaks on")
    empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if empty:  # JoeyNMT drops empty lines on reading, which would misalign the pair files
        raise SystemExit(f"{out.name}: empty lines {empty[:10]}")
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def train_spm(train_file: Path, prefix: Path, vocab_size: int) -> dict:
    """Learn one BPE model (deterministic: BPE training samples nothing with the whole file as input)."""
    import sentencepiece as spm

    options = {
        "input": str(train_file),
        "model_prefix": str(prefix),
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "character_coverage": 1.0,
        "normalization_rule_name": "identity",
        **{f"{name}_id": idx for name, (idx, _) in SPECIALS.items()},
        **{f"{name}_piece": piece for name, (_, piece) in SPECIALS.items()},
        "num_threads": 1,
        "minloglevel": 2,
    }
    spm.SentencePieceTrainer.train(**options)
    return {k: v for k, v in options.items() if k not in ("input", "model_prefix")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="work directory (data/ is created inside)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder of Multi30k *.gz files")
    parser.add_argument("--src", default="de")
    parser.add_argument("--trg", default="en")
    parser.add_argument("--vocab-size", type=int, default=8000, help="pieces per side, specials included")
    parser.add_argument("--force", action="store_true", help="redo even if the manifest matches")
    args = parser.parse_args(argv)

    out = args.work / "data"
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    wanted = {"src": args.src, "trg": args.trg, "vocab_size": args.vocab_size,
              "data_dir": str(args.data_dir.resolve())}
    if manifest_path.is_file() and not args.force:
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            print(f"prepare_data: {out} is up to date (use --force to redo)")
            return 0

    counts: dict[str, int] = {}
    for split, name in SPLITS.items():
        pair = {}
        for lang in (args.src, args.trg):
            src_path = args.data_dir / f"{name}.{lang}.gz"
            if not src_path.is_file():
                raise SystemExit(f"missing {src_path}")
            pair[lang] = read_gz_lines(src_path)
        if len(pair[args.src]) != len(pair[args.trg]):
            raise SystemExit(f"{name}: {len(pair[args.src])} {args.src} lines vs {len(pair[args.trg])} {args.trg}")
        for lang, lines in pair.items():
            write_split(lines, out / f"{split}.{lang}")
        counts[split] = len(pair[args.src])

    spm_options = {}
    vocab_sizes = {}
    for lang in (args.src, args.trg):
        spm_options = train_spm(out / f"train.{lang}", out / f"spm.{lang}", args.vocab_size)
        pieces = [line.split("\t")[0] for line in (out / f"spm.{lang}.vocab").read_text(encoding="utf-8").splitlines()]
        for key, (idx, token) in SPECIALS.items():
            assert pieces[idx] == token, (lang, key, pieces[idx])
        (out / f"vocab.{lang}.txt").write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
        vocab_sizes[lang] = len(pieces)

    manifest = {**wanted, "lines": counts, "vocab_sizes": vocab_sizes, "sentencepiece": spm_options}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({"prepare_data": str(out), "lines": counts, "vocab_sizes": vocab_sizes}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
