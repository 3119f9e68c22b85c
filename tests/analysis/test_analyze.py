"""`seq2seq analyze`: the search-error analysis across beam sizes, on a tiny dates model trained here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from seq2seq_lightning.analysis.analyze import TOLERANCE, Output, sentence_record

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "translation" / "dates.yaml"
TINY = ["--data.init_args.num_train=300", "--data.init_args.num_val=40", "--data.init_args.num_test=40",
        "--model.init_args.encoder.init_args.hidden_size=16", "--model.init_args.decoder.init_args.hidden_size=16"]
SEARCHES = ["greedy", "beam-2", "beam-4", "exact"]
FIELDS = {"search", "beam_size", "length_penalty", "sentences", "bleu", "mean_log_prob", "length_ratio",
          "reference_better", "search_errors", "empty", "exact_optimal", "expansions", "seconds"}


def seq2seq(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"seq2seq {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def ckpt(tiny_dates_run: Path) -> Path:
    """The checkpoint of the session's tiny dates fit (tests/conftest.py): ``fit -c dates.yaml`` with TINY
    below, one epoch, no model summary."""
    return max(tiny_dates_run.rglob("last.ckpt"))


@pytest.fixture(scope="module")
def analysed(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One analysis run with the config's W&B logger (offline): (output folder, run folder, stdout)."""
    run = tmp_path_factory.mktemp("analyze")
    out = run / "analysis"
    proc = seq2seq("analyze", "-c", str(CONFIG), "--ckpt_path", str(ckpt), *TINY[2:3], "--beam_sizes", "1", "2", "4",
                   "--exact", "true", "--limit", "20", "--output", str(out), f"--trainer.default_root_dir={run}",
                   "--progress", "false")
    return out, run, proc.stdout


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def better(a_text: str, a_score: float, b_text: str, b_score: float) -> bool:
    return a_text != b_text and a_score > b_score + TOLERANCE


def test_summary_has_one_row_per_search_with_every_field(analysed: tuple[Path, Path, str]) -> None:
    out, _, stdout = analysed
    rows = read_jsonl(out / "summary.jsonl")
    assert [r["search"] for r in rows] == SEARCHES
    assert [r["beam_size"] for r in rows] == [1, 2, 4, None]
    for row in rows:
        assert set(row) == FIELDS
        assert row["sentences"] == 20 and row["length_penalty"] == 0.0
        assert 0.0 <= row["bleu"] <= 100.0 and row["seconds"] >= 0.0
        for key in ("reference_better", "search_errors", "empty"):
            assert 0.0 <= row[key] <= 1.0
    exact = rows[-1]
    assert exact["search_errors"] == 0.0
    assert exact["exact_optimal"] == 1.0 and exact["expansions"] > 0
    assert all(r["exact_optimal"] is None and r["expansions"] is None for r in rows[:-1])
    table = (out / "summary.md").read_text(encoding="utf-8")
    assert table.startswith("| search | beam_size | bleu |")
    assert all(f"| {name} |" in table for name in SEARCHES)
    assert "| search | beam_size | bleu |" in stdout  # printed at the end


def test_summary_agrees_with_sentences(analysed: tuple[Path, Path, str]) -> None:
    out, _, _ = analysed
    rows = {r["search"]: r for r in read_jsonl(out / "summary.jsonl")}
    sentences = read_jsonl(out / "sentences.jsonl")
    assert [s["index"] for s in sentences] == list(range(20))
    ref_tokens = sum(s["reference_tokens"] for s in sentences)
    for name in SEARCHES:
        entries = [s["searches"][name] for s in sentences]
        exact_better = [better(s["searches"]["exact"]["output"], s["searches"]["exact"]["score"], e["output"],
                               e["score"]) for s, e in zip(sentences, entries)]
        ref_better = [better(s["reference"], s["reference_score"], e["output"], e["score"])
                      for s, e in zip(sentences, entries)]
        assert [e["exact_better"] for e in entries] == exact_better
        assert [e["reference_better"] for e in entries] == ref_better
        row = rows[name]
        assert row["search_errors"] == pytest.approx(sum(exact_better) / 20)
        assert row["reference_better"] == pytest.approx(sum(ref_better) / 20)
        assert row["empty"] == pytest.approx(sum(e["tokens"] == 0 for e in entries) / 20)
        assert row["mean_log_prob"] == pytest.approx(sum(e["log_prob"] for e in entries) / 20)
        assert row["length_ratio"] == pytest.approx(sum(e["tokens"] for e in entries) / ref_tokens)


def test_exact_scores_at_least_every_beam_and_verdicts(analysed: tuple[Path, Path, str]) -> None:
    out, _, _ = analysed
    for s in read_jsonl(out / "sentences.jsonl"):
        searches = s["searches"]
        assert searches["exact"]["optimal"] is True
        for name in SEARCHES[:-1]:
            assert searches["exact"]["score"] >= searches[name]["score"] - TOLERANCE, (s["index"], name)
        widest = searches["beam-4"]
        assert s["verdict_of"] == "beam-4"
        if widest["output"] == s["reference"]:
            assert s["verdict"] == "ok"
        elif widest["exact_better"] or widest["reference_better"]:
            assert s["verdict"] == "search_error"
        else:
            assert s["verdict"] == "model_error"


def test_picture_is_a_png_and_logged_to_wandb_in_the_run_folder(analysed: tuple[Path, Path, str]) -> None:
    out, run, _ = analysed
    with Image.open(out / "beam_sizes.png") as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
    logged = list((run / "wandb").glob("offline-run-*/files/media/images/analysis/beam_sizes*.png"))
    assert logged, sorted(str(p.relative_to(run)) for p in run.rglob("*.png"))
    with Image.open(logged[0]) as image:
        assert image.format == "PNG"


def test_help_explains_every_option(seq2seq_here: Seq2SeqHere) -> None:
    text = seq2seq_here("analyze", "--help").stdout
    for option in ("--ckpt_path", "--beam_sizes", "--exact", "--limit", "--length_penalty", "--max_expansions",
                   "--output", "--progress", "--data", "--trainer"):
        assert option in text
    for word in ("search_error", "model_error", "reference_better", "length_ratio", "log_prob / L **"):
        assert word in " ".join(text.split()), word


def test_length_penalty_ranks_and_compares_normalised_scores(ckpt: Path, tmp_path: Path) -> None:
    from seq2seq_lightning import TranslationModule
    from seq2seq_lightning.analysis.analyze import analyze
    from seq2seq_lightning.data.dates import DatesDataModule

    module = TranslationModule.load_from_checkpoint(ckpt, map_location="cpu")
    data = DatesDataModule(num_test=40, tokenizers=module.hparams.tokenizers)
    rows = analyze(module, data, str(tmp_path), beam_sizes=[1, 2], exact=True, limit=6, length_penalty=1.0,
                   max_expansions=500, progress=False)
    assert [r["search"] for r in rows] == ["greedy", "beam-2", "exact"]
    assert all(r["length_penalty"] == 1.0 for r in rows) and rows[-1]["search_errors"] == 0.0
    for s in read_jsonl(tmp_path / "sentences.jsonl"):
        assert s["reference_score"] == pytest.approx(s["reference_log_prob"] / (s["reference_tokens"] + 1))
        for e in s["searches"].values():
            assert e["score"] == pytest.approx(e["log_prob"] / (e["tokens"] + e["eos"]))


def out(tokens: list[int], score: float, eos: bool = True) -> Output:
    return Output(tokens, "".join(map(str, tokens)), score, score, eos)


def test_verdicts_follow_their_definitions() -> None:
    ref = [out([1, 2], -1.0)]
    ok = sentence_record(ref, {"beam-4": out([1, 2], -1.0), "exact": out([1, 2], -1.0)}, "beam-4")
    assert ok["verdict"] == "ok"
    ref_wins = sentence_record(ref, {"beam-4": out([3], -2.0)}, "beam-4")  # no exact: the reference is better
    assert ref_wins["verdict"] == "search_error" and ref_wins["searches"]["beam-4"]["exact_better"] is None
    exact_wins = sentence_record(ref, {"beam-4": out([3], -0.9), "exact": out([], -0.5)}, "beam-4")
    assert exact_wins["verdict"] == "search_error"
    assert exact_wins["searches"]["beam-4"] == {**exact_wins["searches"]["beam-4"], "exact_better": True,
                                                "reference_better": False}
    model = sentence_record(ref, {"beam-4": out([3], -0.5), "exact": out([3], -0.5)}, "beam-4")
    assert model["verdict"] == "model_error"
    noise = sentence_record(ref, {"beam-4": out([3], -1.0 - TOLERANCE / 2)}, "beam-4")  # within the tolerance
    assert noise["verdict"] == "model_error"
