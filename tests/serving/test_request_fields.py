"""Request fields beyond the source: ``"prefix"``, ``"constraints"`` and ``"nbest"``.

A server decoding with constrained_beam (beam 3, n_best 2) answers each request as `seq2seq predict`
answers a JSON line holding the same fields, with the same strategy, on the same tiny dates checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving.harness import Server, clean_up, launch, same_answer, wait_ready
from tests.test_cli import CONFIG, seq2seq

REQUESTS = [
    {"source": "25th of June, 2009", "prefix": "2009-"},
    {"source": "25th of June, 2009"},
    {"source": "3 mars 1998", "constraints": ["-03-", "1998"], "nbest": True},
    {"source": "3 mars 1998", "nbest": True},
    {"source": "Jun 1, 1950", "prefix": "19", "constraints": ["-06"], "nbest": True},
    {"source": "Dienstag, 3. März 1998", "prefix": None, "constraints": None, "nbest": False},  # null: absent
    {"source": "12 August 2001", "prefix": "", "constraints": []},
    {"source": "May 5th, 1977", "constraints": ["", "05"]},  # an empty phrase is dropped, as predict drops it
    {"source": "", "prefix": "2000", "nbest": True},  # an empty source: an empty answer, as predict's
    {"source": "October 31, 1999", "prefix": "1999-10-"},
    {"source": "x" * 300, "constraints": ["12"]},  # cut to max_source_len, as predict cuts it
]
STRATEGY = {"beam_size": 3, "n_best": 2}


@pytest.fixture(scope="module")
def constrained_server(dates_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(dates_ckpt, tmp_path_factory.mktemp("fields-log") / "server.log", "--strategy", "constrained_beam",
                    "--strategy_kwargs", json.dumps(STRATEGY), "--max_batch_size", "8", "--batch_timeout", "0.05")
    try:
        yield server
    finally:
        clean_up(server)


@pytest.fixture(scope="module")
def predicted(dates_ckpt: Path, constrained_server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """`seq2seq predict`'s JSON lines for REQUESTS written as its JSON-lines input (it ignores "nbest"),
    run while the server starts."""
    folder = tmp_path_factory.mktemp("fields-predict")
    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REQUESTS), encoding="utf-8")
    seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(dates_ckpt), f"--data.init_args.predict_path={folder}/in.jsonl",
            "--output", str(folder / "out.jsonl"), "--model.strategy=constrained_beam",
            *(f"--model.strategy.{k}={v}" for k, v in STRATEGY.items()), "--trainer.logger=false",
            f"--trainer.default_root_dir={folder}")
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(REQUESTS) and not any("error" in r for r in rows), rows
    return rows


def close(a: float | None, b: float | None) -> bool:
    return a is None and b is None or a is not None and b is not None and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def test_requests_with_prefix_constraints_and_nbest_get_what_predict_gives(constrained_server: Server,
                                                                          predicted: list[dict]) -> None:
    wait_ready(constrained_server)
    with ThreadPoolExecutor(8) as pool:  # twice over, at once: rows with and without fields share batches
        answers = list(pool.map(constrained_server.predict, REQUESTS + REQUESTS))
    for request, row, (status, answer) in zip(REQUESTS + REQUESTS, predicted + predicted, answers):
        assert status == 200 and same_answer(answer, row), (request, answer, row)
        if request.get("nbest"):
            assert len(answer["nbest"]) == len(row["nbest"]), (request, answer, row)
            for got, want in zip(answer["nbest"], row["nbest"]):
                assert got["output"] == want["output"] and close(got["score"], want["score"]), (request, answer, row)
                assert close(got["log_prob"], want["log_prob"]), (request, answer, row)
        else:
            assert set(answer) == {"output", "score"}, answer
        if request["source"]:  # the fields had their effect
            assert answer["output"].startswith(request.get("prefix") or ""), (request, answer)
            assert all(p in answer["output"] for p in request.get("constraints") or []), (request, answer)
    assert [len(a["nbest"]) for r, (_, a) in zip(REQUESTS, answers) if r.get("nbest")] == [2, 2, 2, 0]


def test_wrong_types_get_422_before_the_queue(constrained_server: Server) -> None:
    wait_ready(constrained_server)
    for body, words in [({"source": "3 mars 1998", "prefix": ["19"]}, '"prefix" must be a string, not an array'),
                        ({"source": "3 mars 1998", "constraints": "1998"}, "must be an array of strings, not a string"),
                        ({"source": "3 mars 1998", "constraints": [["19"]]}, "an array holding an array"),
                        ({"source": "3 mars 1998", "nbest": 2}, '"nbest" must be true or false, not a number'),
                        ({"source": "3 mars 1998", "n_best": 2}, 'unknown field(s) "n_best"')]:
        status, answer = constrained_server.predict(body)
        assert status == 422 and set(answer) == {"error"} and words in answer["error"], (body, answer)
    stats = json.loads(constrained_server.get("/stats")[1])
    assert stats["rejected"] == 0  # refused by the HTTP server: no worker saw them


def test_parse_body_reads_null_as_absent() -> None:
    from seq2seq_lightning.serving.requests import RequestError, parse_body

    body = b'{"source": "3 mars 1998", "prefix": null, "constraints": null, "nbest": null}'
    assert parse_body(body, "source") == {"source": "3 mars 1998"}
    assert parse_body(b'{"image": "AAAA", "nbest": true}', "image") == {"image": "AAAA", "nbest": True}
    with pytest.raises(RequestError, match='"source" must be a string'):
        parse_body(b'{"source": null}', "source")
    with pytest.raises(RequestError, match="unknown field"):
        parse_body(b'{"image": "AAAA", "constraints": ["a"]}', "image")
