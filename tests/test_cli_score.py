"""`seq2seq score` (forced decoding) from the command line: scores equal predict's log-probs, rows in
input order, malformed lines and unreadable images as counted error rows; both tasks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from seq2seq_lightning import CaptioningModule, TranslationModule
from tests.test_cli import ROOT, last_ckpt, seq2seq

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere

DATES = ROOT / "configs" / "translation" / "dates.yaml"
SHAPES = ROOT / "configs" / "captioning" / "shapes.yaml"
DATES_TINY = [
    "--data.init_args.num_train=512", "--data.init_args.num_val=16", "--data.init_args.num_test=16",
    "--model.init_args.encoder.init_args.hidden_size=32", "--model.init_args.decoder.init_args.hidden_size=32",
    "--data.init_args.batch_size=32", "--model.init_args.optimizer.init_args.lr=0.01", "--trainer.max_epochs=3",
    "--trainer.logger=false", "--trainer.enable_model_summary=false",
]
SOURCES = ["25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "tuesday 4 july 2000", "1 January 2001",
           "December 31st, 1999"]
KEYS = ["source", "target", "log_prob", "tokens", "token_log_probs"]


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


@pytest.fixture(scope="module")
def dates_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dates-run")
    seq2seq("fit", "-c", str(DATES), *DATES_TINY, f"--trainer.default_root_dir={run}")
    return last_ckpt(run)


def score(config: Path, ckpt: Path, pairs: Path, out: Path, *extra: str):
    return seq2seq("score", "-c", str(config), "--ckpt_path", str(ckpt), f"--data.init_args.predict_path={pairs}",
                   "--output", str(out), "--trainer.logger=false", f"--trainer.default_root_dir={out.parent}", *extra)


def test_help_lists_score_and_explains_its_options(seq2seq_here: Seq2SeqHere) -> None:
    assert "score" in seq2seq_here("--help").stdout
    text = seq2seq_here("score", "--help").stdout
    assert "Forced decoding" in text and "--output" in text and "--ckpt_path" in text and "token_log_probs" in text


def test_score_of_beam_outputs_equals_predict_log_prob(dates_ckpt: Path, tmp_path: Path) -> None:
    """Beam 4 (length_penalty 0) outputs scored by `seq2seq score` and by score() give predict's
    nbest[0].log_prob; wrong targets score lower; malformed lines are error rows in their place."""
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    predicted = tmp_path / "predicted.jsonl"
    seq2seq("predict", "-c", str(DATES), "--ckpt_path", str(dates_ckpt), f"--data.init_args.predict_path={inputs}",
            "--output", str(predicted), "--model.strategy=beam", "--model.strategy.beam_size=4",
            "--model.strategy.length_penalty=0", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}")
    records = read_jsonl(predicted)
    outputs = [r["output"] for r in records]
    wrong = ["1899-12-31" if o != "1899-12-31" else "2000-01-01" for o in outputs]
    lines = [f"{s}\t{o}" for s, o in zip(SOURCES, outputs)]
    lines += ["no tab on this line"] + [f"{s}\t{w}" for s, w in zip(SOURCES, wrong)] + ["", "\tend\twith\ttabs"]
    pairs = tmp_path / "pairs.tsv.gz"
    with gzip.open(pairs, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    out = tmp_path / "scores.jsonl"
    proc = score(DATES, dates_ckpt, pairs, out, "--data.init_args.eval_batch_size=4")
    rows = read_jsonl(out)
    assert len(rows) == len(lines)
    n = len(SOURCES)
    good, bad = rows[:n] + rows[n + 1 : 2 * n + 1] + rows[-1:], [rows[n], rows[-2]]
    for row, (source, target) in zip(good, [ln.split("\t", 1) for ln in lines[:n] + lines[n + 1 : 2 * n + 1]]):
        assert list(row) == KEYS and (row["source"], row["target"]) == (source, target)
        assert len(row["token_log_probs"]) == row["tokens"]
        assert row["log_prob"] == pytest.approx(sum(row["token_log_probs"]), abs=1e-6)
    assert (rows[-1]["source"], rows[-1]["target"]) == ("", "end\twith\ttabs")  # split at the first tab
    for row, line in zip(bad, (n + 1, len(lines) - 1)):
        assert row["line"] == line and "no tab" in row["error"] and row["log_prob"] is None
        assert row["tokens"] is None and row["token_log_probs"] is None
    assert "2 of 15 lines malformed" in proc.stderr + proc.stdout

    model = TranslationModule.load_from_checkpoint(dates_ckpt, map_location="cpu").eval()
    batch = model.make_batch([model.source_tokenizer.encode(s) for s in SOURCES])
    limits = model.max_lengths(batch).tolist()
    api = model.score(SOURCES, outputs)
    compared = 0
    for record, row, limit, from_api in zip(records, rows[:n], limits, api):
        best = record["nbest"][0]
        assert row["tokens"] == len(model.target_tokenizer.encode(record["output"])) + 1
        assert from_api == pytest.approx(row["log_prob"], abs=1e-4)
        if row["tokens"] - 1 < limit:  # ended with EOS (one closed at max_len has no EOS term in predict)
            assert row["log_prob"] == pytest.approx(best["log_prob"], abs=1e-3), record
            compared += 1
    assert compared >= n - 1
    assert all(w["log_prob"] < r["log_prob"] for r, w in zip(rows[:n], rows[n + 1 : 2 * n + 1]))


def test_json_lines_pairs_with_malformed_lines(dates_ckpt: Path, tmp_path: Path) -> None:
    lines = [json.dumps({"source": SOURCES[0], "target": "2009-06-25"}), "{not json", json.dumps(["a", "b"]),
             json.dumps({"source": SOURCES[1]}), json.dumps({"source": SOURCES[1], "target": 7}),
             json.dumps({"source": SOURCES[2], "target": "", "note": "extra keys are ignored"})]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    proc = score(DATES, dates_ckpt, pairs, out)
    rows = read_jsonl(out)
    assert [r.get("line") for r in rows] == [None, 2, 3, 4, 5, None]
    assert "invalid JSON" in rows[1]["error"] and "expected a JSON object" in rows[2]["error"]
    assert "'target' is missing" in rows[3]["error"] and "'target' is not a string" in rows[4]["error"]
    assert all(str(pairs) in r["error"] for r in rows[1:5])
    assert rows[0]["tokens"] == 11 and rows[5]["tokens"] == 1  # an empty target: the EOS alone
    model = TranslationModule.load_from_checkpoint(dates_ckpt, map_location="cpu")
    assert [rows[0]["log_prob"], rows[5]["log_prob"]] == pytest.approx(
        model.score([SOURCES[0], SOURCES[2]], ["2009-06-25", ""]), abs=1e-4)
    assert "4 of 6 lines malformed" in proc.stderr + proc.stdout


# -- captioning ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_ckpt(tiny_shapes_run: Path) -> Path:
    """The checkpoint of the session's tiny shapes fit (tests/conftest.py): ``fit -c shapes.yaml`` with the TINY
    of tests/test_cli_captioning.py (64 images of 32 pixels, width 0.125, hidden size 16, one epoch)."""
    return last_ckpt(tiny_shapes_run)


def test_captioning_pairs_with_unreadable_images(shapes_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.new("RGB", (50, 50), (0, 0, 255)).save(folder / "b.png")
    (folder / "broken.jpg").write_text("not an image")
    model = CaptioningModule.load_from_checkpoint(shapes_ckpt, map_location="cpu").eval()
    images = [str(folder / "a.jpg"), str(folder / "b.png")]
    captions = model.caption(images, strategy="beam", beam_size=2)
    tsv = tmp_path / "pairs.tsv"  # paths relative to the pair file's folder
    tsv.write_text(f"photos/a.jpg\t{captions[0]}\nphotos/broken.jpg\ta red circle\nno tab\n"
                   f"{folder / 'b.png'}\t{captions[1]}\nphotos/a.jpg\tA Red, Circle!\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    proc = score(SHAPES, shapes_ckpt, tsv, out)
    rows = read_jsonl(out)
    assert len(rows) == 5 and list(rows[0]) == KEYS and rows[0]["target"] == captions[0]
    assert rows[1]["line"] == 2 and "unreadable image" in rows[1]["error"] and rows[1]["source"] == "photos/broken.jpg"
    assert rows[2]["line"] == 3 and "no tab" in rows[2]["error"]
    api = model.score(images + images[:1], [captions[0], captions[1], "a red circle"])
    assert [rows[0]["log_prob"], rows[3]["log_prob"], rows[4]["log_prob"]] == pytest.approx(api, abs=1e-4)
    log = proc.stderr + proc.stdout
    assert "1 of 5 lines malformed" in log and "1 of 5 images unreadable" in log

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"image": "photos/b.png", "caption": captions[1]}) + "\n"
                     + json.dumps({"source": "photos/b.png", "target": captions[1]}) + "\n", encoding="utf-8")
    score(SHAPES, shapes_ckpt, jsonl, out)
    rows = read_jsonl(out)
    assert rows[0]["log_prob"] == pytest.approx(api[1], abs=1e-4)
    assert "'image' is missing" in rows[1]["error"]
