"""`seq2seq serve` as a user runs it: a real server in a subprocess on 127.0.0.1, real HTTP clients.

On the session's tiny dates and shapes models (tests/conftest.py); every answer is checked against `seq2seq predict`
(translation) or `caption()` (captioning) on the same inputs.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving.harness import MAX_BYTES, Server, clean_up, launch, same_answer, wait_ready
from tests.test_cli import CONFIG, last_ckpt, seq2seq


@pytest.fixture(scope="module")
def dates_server(dates_ckpt: Path, request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(dates_ckpt, tmp_path_factory.mktemp("serve-log") / "server.log",
                    "--max_batch_size", "8", "--batch_timeout", "0.05")
    try:
        request.getfixturevalue("predicted")  # seq2seq predict runs while the server starts
        yield wait_ready(server)
    finally:
        clean_up(server)


LINES = ["25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "Dienstag, 3. März 1998", "", "   ",
         "x" * 500, "12 August 2001", "May 5th, 1977", "1er janvier 2000", "domingo, 7 de mayo de 1995",
         "October 31, 1999", "the 2nd of February 1987", "15.03.2012", "Sep 9, 2009", "2 Juni 1966"]


@pytest.fixture(scope="module")
def predicted(dates_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """source -> `seq2seq predict`'s JSON line for it."""
    folder = tmp_path_factory.mktemp("serve-predict")
    (folder / "in.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(dates_ckpt),
            f"--data.init_args.predict_path={folder}/in.txt", "--output", str(folder / "out.jsonl"), "--trainer.logger=false", f"--trainer.default_root_dir={folder}")
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    return dict(zip(LINES, rows))


def test_16_concurrent_clients_get_what_predict_gives(dates_server: Server, predicted: dict[str, dict]) -> None:
    def client(k: int) -> list[tuple[str, int, dict]]:
        sources = [LINES[(k + 5 * j) % len(LINES)] for j in range(4)]
        return [(s, *dates_server.predict({"source": s})) for s in sources]

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client, range(16)) for a in batch]
    assert len(answers) == 64
    for source, status, answer in answers:
        assert status == 200, (source, answer)
        assert same_answer(answer, predicted[source]), (source, answer, predicted[source])


def test_batches_were_formed(dates_server: Server) -> None:
    status, body = dates_server.get("/stats")
    stats = json.loads(body)
    assert status == 200 and stats["max_batch_size"] == 8 and stats["max_source_len"] == 100
    assert stats["searched"] >= 56  # the 64 requests of the concurrent test, less the empty ones
    assert stats["empty"] >= 8
    assert any(int(size) > 1 for size in stats["batch_sizes"]), stats  # dynamic batching happened
    assert stats["mean_batch_size"] > 1.5, stats


BAD = [
    (b"this is not json", 400, "not JSON"),
    (b"{}", 422, 'missing "source"'),
    (b'{"source": 5}', 422, '"source" must be a string'),
    (b'["25th of June, 2009"]', 422, "JSON object"),
    (b'{"source": "Jun 1, 1950", "strategy": "beam"}', 422, "unknown field"),
    (b'{"source": "Jun 1, 1950", "prefix": 19}', 422, '"prefix" must be a string, not a number'),
    (b'{"source": "Jun 1, 1950", "constraints": "1950"}', 422, '"constraints" must be an array of strings'),
    (b'{"source": "Jun 1, 1950", "constraints": [1950]}', 422, "an array holding a number"),
    (b'{"source": "Jun 1, 1950", "nbest": "yes"}', 422, '"nbest" must be true or false'),
    (b'{"source": "3 mars 1998", "constraints": ["1998"]}', 422, "'greedy', which does not"),  # in the worker
    (b'{"source": "", "constraints": ["1998"]}', 422, "--strategy constrained_beam"),  # empty, refused all the same
    (json.dumps({"source": "y" * (MAX_BYTES + 10)}).encode(), 413, "larger than"),
]


def test_malformed_requests_get_4xx_json_errors_and_harm_no_batch(dates_server: Server,
                                                                  predicted: dict[str, dict]) -> None:
    good = [s for s in LINES if s.strip()][:8]
    with ThreadPoolExecutor(16) as pool:  # bad and good requests at once: the good ones share batches
        bad = [pool.submit(dates_server.post, body) for body, _, _ in BAD]
        fine = [pool.submit(dates_server.predict, {"source": s}) for s in good]
        for future, (body, status, words) in zip(bad, BAD):
            got, answer = future.result()
            assert got == status and set(answer) == {"error"} and words in answer["error"], (body[:40], got, answer)
        for future, source in zip(fine, good):
            got, answer = future.result()
            assert got == 200 and same_answer(answer, predicted[source]), (source, answer)
    status, answer = dates_server.predict({"source": LINES[0]})  # later requests still succeed
    assert status == 200 and same_answer(answer, predicted[LINES[0]])
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = dates_server.post(b'{"source": "3 mars 1998"}', form)
    assert status == 200 and same_answer(answer, predicted["3 mars 1998"])  # what curl -d sends


def test_sigterm_answers_requests_in_flight_then_exits_0(dates_server: Server, predicted: dict[str, dict]) -> None:
    """Two requests are half sent when SIGTERM arrives; both are answered, then the server exits 0."""
    bodies = [json.dumps({"source": s}).encode() for s in ("Jun 1, 1950", "12 August 2001")]
    socks = []
    for body in bodies:
        sock = socket.create_connection(("127.0.0.1", dates_server.port), timeout=120)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        socks.append(sock)
    time.sleep(0.5)
    dates_server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    for sock, body, source in zip(socks, bodies, ("Jun 1, 1950", "12 August 2001")):
        sock.sendall(body[10:])
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        assert reply.status == 200
        assert same_answer(json.loads(reply.read()), predicted[source])
        sock.close()
    assert dates_server.proc.wait(timeout=180) == 0, dates_server.log.read_text()[-3000:]


def test_two_workers_answer_like_predict(dates_ckpt: Path, predicted: dict[str, dict], tmp_path: Path) -> None:
    """--workers 2 with --threads left to its default: two worker processes, each capped to its share of
    the cores, both decoding, and every answer to 16 concurrent clients is predict's."""
    server = launch(dates_ckpt, tmp_path / "server.log", "--workers", "2", "--max_batch_size", "4",
                    "--batch_timeout", "0.01", "--log_level", "debug", threads=None)
    try:
        wait_ready(server)
        sources = [LINES[k % len(LINES)] for k in range(64)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda s: (s, *server.predict({"source": s})), sources))
        for source, status, answer in answers:
            assert status == 200 and same_answer(answer, predicted[source]), (source, answer, predicted[source])
        stats = json.loads(server.get("/stats")[1])
        cap = max(1, (len(os.sched_getaffinity(0)) - 1) // 2)  # the cores less the HTTP server's, halved
        assert stats["workers"] == 2 and stats["threads"] == cap, stats
        assert stats["searched"] + stats["empty"] == 64, stats
        assert server.stop() == 0, server.log.read_text()[-3000:]
        lines = server.log.read_text().splitlines()
        ready = [line for line in lines if "worker ready" in line]
        assert len(ready) == 2 and all(f"{cap} torch thread(s)" in line for line in ready), ready
        batches = [line for line in lines if "batch of" in line and "searched" in line]
        pids = {re.search(r"\[(\d+)\]:", line).group(1) for line in batches}
        assert len(pids) == 2, pids  # both workers took batches
    finally:
        clean_up(server)


def test_strategy_options_override_like_translate(dates_ckpt: Path) -> None:
    """In process: --strategy beam --strategy_kwargs '{beam_size: 3, n_best: 2}' decodes as
    translate(strategy='beam', beam_size=3, n_best=2) (the answer is the best of the n-best)."""
    from seq2seq_lightning.serving.api import Seq2SeqAPI

    api = Seq2SeqAPI(str(dates_ckpt), strategy="beam", strategy_kwargs={"beam_size": 3, "n_best": 2},
                     max_source_len=100, threads=1, max_batch_size=16, batch_timeout=0.0)
    api.setup("cpu")
    sources = [s for s in LINES if s.strip() and len(s) < 100]
    outputs = api.predict([api.decode_request({"source": s}) for s in sources])
    assert [o.response()["output"] for o in outputs] == api.module.translate(sources, "beam", beam_size=3, n_best=2)
    assert api.strategy.beam_size == 3 and api.strategy.n_best == 2
    assert all(len(o.nbest) == 2 and "nbest" not in o.response() for o in outputs)


def test_quantize_int8_serves_the_quantized_module(dates_ckpt: Path) -> None:
    """In process: --quantize int8 serves module.quantize("int8"), which decodes a batch as its translate()."""
    from seq2seq_lightning.modules.base import Seq2SeqModule
    from seq2seq_lightning.serving.api import Seq2SeqAPI

    if not callable(getattr(Seq2SeqModule, "quantize", None)):
        pytest.skip("Seq2SeqModule.quantize is not in this tree")
    api = Seq2SeqAPI(str(dates_ckpt), quantize="int8", max_source_len=100, threads=1, max_batch_size=16,
                     batch_timeout=0.0)
    api.setup("cpu")
    assert api.module.quantized == "int8"
    sources = [s for s in LINES if s.strip() and len(s) < 100]
    outputs = api.predict([api.decode_request({"source": s}) for s in sources])
    assert [o.response()["output"] for o in outputs] == api.module.translate(sources)


def test_help_and_errors_before_any_worker_starts(dates_ckpt: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from seq2seq_lightning.cli import main
    from seq2seq_lightning.serving.cli import serve

    with pytest.raises(SystemExit) as exit_help:
        main(["serve", "--help"])
    assert exit_help.value.code == 0
    out = capsys.readouterr().out
    for name in serve.__code__.co_varnames[: serve.__code__.co_argcount]:
        assert f"--{name}" in out, name
    assert "seconds a batch waits" in out and "POST /predict" in out
    with pytest.raises(SystemExit) as exit_missing:
        main(["serve", "--ckpt_path", str(tmp_path / "missing.ckpt")])
    assert exit_missing.value.code == 2 and "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_kwargs:  # the checkpoint's greedy search has no beam_size
        main(["serve", "--ckpt_path", str(dates_ckpt), "--strategy_kwargs", '{"beam_size": 3}'])
    assert exit_kwargs.value.code == 2 and "takes no beam_size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_cuda:
        main(["serve", "--ckpt_path", str(dates_ckpt), "--quantize", "int8", "--accelerator", "cuda"])
    assert exit_cuda.value.code == 2 and "runs on the CPU" in capsys.readouterr().err


# -- captioning -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_ckpt(tiny_shapes_run: Path) -> Path:
    """The checkpoint of the session's tiny shapes fit (tests/conftest.py: the captioning TINY of
    tests/test_cli_captioning.py)."""
    return last_ckpt(tiny_shapes_run)


def test_captioning_base64_images(shapes_ckpt: Path, tmp_path: Path) -> None:
    import random

    from seq2seq_lightning.data.shapes import random_scene, render
    from seq2seq_lightning.serving.api import Seq2SeqAPI

    rng = random.Random(3)
    files = []
    for i, suffix in enumerate(("png", "png", "jpg")):
        path = tmp_path / f"scene{i}.{suffix}"
        render(random_scene(rng), size=96).save(path)
        files.append(path)
    server = launch(shapes_ckpt, tmp_path / "server.log", "--max_batch_size", "4", "--batch_timeout", "0.05",
                    "--max_request_bytes", str(1 << 20))  # starts while the references are computed below
    try:
        api = Seq2SeqAPI(str(shapes_ckpt), max_batch_size=8, batch_timeout=0.0)  # in process: a bad row in a batch
        api.setup("cpu")
        model = api.module  # the checkpoint's module, in eval mode: the references come from its caption()
        expected = model.caption([str(p) for p in files])
        found = model.search(model.make_batch([str(p) for p in files]))  # what caption() searched: its scores
        scores = [hyps[0].score for hyps in found]
        rows = [api.decode_request({"image": base64.b64encode(p.read_bytes()).decode()}) for p in files]
        rows.insert(1, api.decode_request({"image": base64.b64encode(b"no picture").decode()}))
        answers = [api.encode_response(out) for out in api.unbatch(api.predict(api.batch(rows)))]
        assert [a["output"] for a in answers[:1] + answers[2:]] == expected
        assert answers[1].status_code == 422 and b"does not decode" in answers[1].body

        wait_ready(server)
        images = [base64.b64encode(p.read_bytes()).decode() for p in files]
        garbage = [base64.b64encode(b"these bytes are no picture" * 20).decode(), "@@not base64@@",
                   base64.b64encode(files[0].read_bytes()[:200]).decode()]
        with ThreadPoolExecutor(8) as pool:  # good and bad images in the same batches
            good = [pool.submit(server.predict, {"image": im}) for im in images]
            bad = [pool.submit(server.predict, {"image": g}) for g in garbage]
            for future, caption, score in zip(good, expected, scores):
                status, answer = future.result()
                assert status == 200 and answer["output"] == caption
                assert math.isclose(answer["score"], score, rel_tol=1e-4, abs_tol=1e-4)  # the same pixels
            for future in bad:
                status, answer = future.result()
                assert status == 422 and set(answer) == {"error"} and "image" in answer["error"], answer
        assert server.predict({"source": "a red circle"})[0] == 422
        status, answer = server.predict({"image": images[1], "prefix": "a"})  # no prefixes for images
        assert status == 422 and 'unknown field(s) "prefix"' in answer["error"]
        status, answer = server.predict({"image": "data:image/png;base64," + images[1], "nbest": True})
        assert status == 200 and answer["output"] == expected[1] and answer["nbest"][0]["output"] == expected[1]
        assert set(answer["nbest"][0]) == {"output", "score", "log_prob"}
        stats = json.loads(server.get("/stats")[1])
        assert stats["rejected"] == 3 and stats["searched"] == 4
        assert server.stop() == 0, server.log.read_text()[-3000:]
    finally:
        clean_up(server)
