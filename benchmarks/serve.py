"""`seq2seq serve` under load: throughput and latency for 1, 16 and 64 concurrent clients.

Starts the server on the checkpoint (a subprocess on 127.0.0.1), then, for each client count, runs
that many client threads (one keep-alive HTTP connection each) that send sources in a loop until the
level's requests are done, and measures requests/s and the p50/p99 latency. Every answer is checked
against the same sources decoded in this process the way `seq2seq predict` decodes them (cut to the
server's max_source_len, the module's search, the strategy's score) and against `translate()`; the
server's `GET /stats` gives each level's mean batch size. The server is stopped with SIGTERM at the
end and must exit 0. Sources: the dates test split (the default) or a text file, one per line.

    python benchmarks/serve.py CKPT [--requests 800] [--clients 1 16 64] [--lines FILE]
        [--server-args "--max_batch_size 16 --batch_timeout 0.002"]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import math
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from common import REPO, emit

GOAL_SPEEDUP = 4.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
        return json.loads(reply.read())


def start_server(ckpt: str, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "seq2seq"), "serve", "--ckpt_path", ckpt, "--port", str(port),
           "--log_level", "warning", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready")


def references(ckpt: str, lines: list[str], limit: int, strategy: str | None, kwargs: dict) -> dict[str, tuple]:
    """source -> (output, score) as predict computes them, after checking outputs against translate()."""
    from seq2seq_lightning import TranslationModule

    model = TranslationModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    search = model.build_strategy(strategy, **kwargs)
    unique = sorted(set(lines))
    out: dict[str, tuple] = {}
    for start in range(0, len(unique), 64):
        chunk = unique[start : start + 64]
        found = model.search(model.make_batch([model.source_tokenizer.encode(s)[:limit] for s in chunk]), search)
        for s, hyps in zip(chunk, found):
            out[s] = (model.target_tokenizer.decode(hyps[0].tokens), float(hyps[0].score))
    short = [s for s in unique if len(model.source_tokenizer.encode(s)) <= limit]
    assert [out[s][0] for s in short] == model.translate(short, strategy, **kwargs), "predict and translate differ"
    return out


def run_level(port: int, clients: int, requests: int, lines: list[str], expected: dict) -> dict:
    """``clients`` threads share ``requests`` requests; latencies, wall time and answers that differ."""
    lock, issued = threading.Lock(), [0]
    latencies: list[float] = []
    wrong: list[str] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i = k * 7919
        while True:
            with lock:
                if issued[0] >= requests:
                    break
                issued[0] += 1
            source = lines[i % len(lines)]
            i += 1
            body = json.dumps({"source": source})
            start = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = json.loads(reply.read())
            elapsed = time.perf_counter() - start
            output, score = expected[source]
            ok = reply.status == 200 and data["output"] == output and math.isclose(data["score"], score,
                                                                                    rel_tol=1e-5, abs_tol=1e-6)
            with lock:
                latencies.append(elapsed)
                if not ok:
                    wrong.append(f"{source!r}: {reply.status} {data} != {(output, score)}")
        conn.close()

    before = get_json(port, "/stats")
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = get_json(port, "/stats")
    batches = after["batches"] - before["batches"]
    searched = after["searched"] - before["searched"]
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "throughput": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[min(len(ordered) - 1,
                                                                                      int(0.99 * len(ordered)))],
            "mean_batch": searched / batches if batches else 0.0, "wrong": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--requests", type=int, default=800, help="requests per client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--lines", type=Path, help="sources, one per line (default: the dates test split)")
    parser.add_argument("--server-args", default="", help="more `seq2seq serve` options, one string")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/serve.jsonl",
                        help="JSON lines are appended here (and printed)")
    args = parser.parse_args()
    extra = shlex.split(args.server_args)
    if args.lines:
        lines = [s for s in args.lines.read_text(encoding="utf-8").split("\n") if s.strip()]
    else:
        from seq2seq_lightning.data.dates import DatesDataModule

        lines = [ex.source for ex in DatesDataModule().examples("test")]
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())  # what else ran (the levels add their own)
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-bench-{port}.log"
    proc = start_server(args.ckpt, port, extra, log)
    try:
        settings = get_json(port, "/stats")
        expected = references(args.ckpt, lines, settings["max_source_len"], settings["strategy"],
                              settings["strategy_kwargs"])
        run_level(port, 4, 64, lines, expected)  # warm-up
        levels = [run_level(port, c, args.requests, lines, expected) for c in args.clients]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    if code != 0:
        raise SystemExit(f"the server exited {code} on SIGTERM:\n{log.read_text()[-3000:]}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    note = {"server": f"max_batch_size {settings['max_batch_size']}, batch_timeout {settings['batch_timeout']}, "
                      f"{settings['workers']} worker(s) x {settings['threads']} thread(s), fast_queue "
                      f"{settings['fast_queue']}, strategy {settings['strategy'] or 'the checkpoint'} "
                      f"{settings['strategy_kwargs'] or ''}".rstrip(),
            "load_before": load_before, "load_after": load, "date": time.strftime("%Y-%m-%d")}
    print(f"\n| clients | requests/s | p50 ms | p99 ms | mean batch | wrong |  (load average before {load_before}, "
          f"after {load})")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for lv in levels:
        print(f"| {lv['clients']} | {lv['throughput']:.1f} | {lv['p50_ms']:.1f} | {lv['p99_ms']:.1f} | "
              f"{lv['mean_batch']:.2f} | {len(lv['wrong'])} |")
        for figure, value, unit in ((f"{lv['clients']} clients: throughput", lv["throughput"], "requests/s"),
                                    (f"{lv['clients']} clients: p50 latency", lv["p50_ms"], "ms"),
                                    (f"{lv['clients']} clients: p99 latency", lv["p99_ms"], "ms"),
                                    (f"{lv['clients']} clients: mean batch size", lv["mean_batch"], "requests")):
            rows.append(dict(figure=figure, value=value, unit=unit, requests=lv["requests"], **note))
    by_clients = {lv["clients"]: lv for lv in levels}
    if 1 in by_clients and 16 in by_clients:
        speedup = by_clients[16]["throughput"] / by_clients[1]["throughput"]
        rows.append(dict(figure="16 clients / 1 client throughput", value=speedup, unit="ratio",
                         goal=f">= {GOAL_SPEEDUP:g}", **note))
    wrong = sum(len(lv["wrong"]) for lv in levels)
    rows.append(dict(figure="answers different from predict", value=wrong, unit="requests", goal="<= 0", **note))
    with args.results.open("a", encoding="utf-8") as results:
        for row in rows:
            goal = row.pop("goal", "")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                emit("serve", row.pop("figure"), row.pop("value"), row.pop("unit"), goal, **row)
            print(printed.getvalue(), end="")
            results.write(printed.getvalue())
    for lv in levels:
        for line in lv["wrong"][:5]:
            print("wrong:", line, file=sys.stderr)
    if wrong:
        raise SystemExit(f"{wrong} answers differ from predict")


if __name__ == "__main__":
    main()
