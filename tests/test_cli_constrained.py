"""`seq2seq predict` on JSON-lines input with prefixes and constraints, malformed lines included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import CONFIG, last_ckpt, seq2seq, seq2seq_together

LINES = [
    {"source": "25th of June, 2009", "prefix": "2009-"},
    {"source": "3 mars 1998", "constraints": ["-03-", "1998"]},
    "{not json",
    {"source": "Jun 1, 1950", "prefix": "19", "constraints": ["-06"]},
    {"source": 1950},
    {"source": "12/01/1999"},
    {"source": ""},
    {"source": "Dienstag, 3. März 1998", "constraints": ["12"], "note": "ignored"},
]


@pytest.fixture(scope="module")
def trained(tiny_dates_run: Path) -> Path:
    """The checkpoint of the session's tiny dates fit (``fit -c dates.yaml`` with TINY, tests/conftest.py)."""
    return last_ckpt(tiny_dates_run)


def test_jsonl_predict_forces_prefixes_meets_constraints_and_keeps_error_rows(trained: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in LINES) + "\n", encoding="utf-8")
    outputs = {}
    procs = seq2seq_together(*(["predict", "-c", str(CONFIG), "--ckpt_path", str(trained),
                                f"--data.init_args.predict_path={src}", "--output", str(tmp_path / f"out.{suffix}"),
                                "--model.strategy=constrained_beam", "--model.strategy.beam_size=5",
                                "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]
                               for suffix in ("jsonl", "txt")))
    for suffix, proc in zip(("jsonl", "txt"), procs):
        out = tmp_path / f"out.{suffix}"
        assert "2 of 8 predict input lines" in proc.stderr + proc.stdout  # one warning for the malformed lines
        outputs[suffix] = out.read_text(encoding="utf-8").split("\n")
        assert outputs[suffix][-1] == "" and len(outputs[suffix]) - 1 == len(LINES)
    records = [json.loads(r) for r in outputs["jsonl"][:-1]]
    assert [r["output"] for r in records] == outputs["txt"][:-1]
    for i, (line, record) in enumerate(zip(LINES, records)):
        if i in (2, 4):  # malformed: an empty output and the reason, in place
            assert record["output"] == "" and record["nbest"] == [] and record["score"] is None
            assert record["error"].startswith(f"line {i + 1} of {src}: ")
            continue
        assert "error" not in record and record["input"] == line["source"]
        if not line["source"]:
            assert record["output"] == ""
            continue
        assert record["output"].startswith(line.get("prefix", ""))
        assert all(p in record["output"] for p in line.get("constraints", [])), record
    assert "invalid JSON" in records[2]["error"] and '"source" is not a string' in records[4]["error"]

    # the same as the Python API gives for the readable lines
    from seq2seq_lightning import TranslationModule

    model = TranslationModule.load_from_checkpoint(trained)
    good = [x for x in LINES if isinstance(x, dict) and isinstance(x["source"], str)]
    want = model.translate([x["source"] for x in good], "constrained_beam", beam_size=5,
                           prefixes=[x.get("prefix") for x in good], constraints=[x.get("constraints") for x in good])
    assert [r["output"] for i, r in enumerate(records) if i not in (2, 4)] == want


def test_constraints_with_a_strategy_that_cannot_meet_them_is_a_clear_error(trained: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"source": "3 mars 1998", "constraints": ["1998"]}) + "\n", encoding="utf-8")
    proc = seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(trained), f"--data.init_args.predict_path={src}",
                   "--output", str(tmp_path / "out.txt"), "--model.strategy=beam", "--trainer.logger=false",
                   f"--trainer.default_root_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "strategy 'beam' does not take constraints" in proc.stderr and "constrained_beam" in proc.stderr
