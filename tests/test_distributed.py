"""Two-process DDP on CPU (gloo), driven through the CLI in subprocesses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.test_cli import CONFIG, TINY, seq2seq, seq2seq_together


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ddp")
    seq2seq("fit", "-c", str(CONFIG), *TINY, "--trainer.max_epochs=2", f"--trainer.default_root_dir={run}",
            "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.logger=false")
    return run


def test_ddp_fit_checkpoints(ddp_run: Path) -> None:
    import torch

    last = sorted(ddp_run.rglob("last.ckpt"))
    assert last, "two-process fit wrote no last.ckpt"
    ckpt = torch.load(last[0], weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] > 0


def test_ddp_predict_equals_single_process(ddp_run: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    pool = ["", "25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "   ", "Dienstag, 3. März 1998", "x" * 40]
    lines = [rng.choice(pool) + ("" if i % 3 else f" {i}") for i in range(101)]  # 101: the sampler must pad
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ckpt = str(min(ddp_run.rglob("last.ckpt")))
    runs = ((1, "auto"), (2, "ddp"))
    seq2seq_together(*(["predict", "-c", str(CONFIG), "--ckpt_path", ckpt, f"--data.init_args.predict_path={src}",
                        "--output", str(tmp_path / f"out{devices}.jsonl"), "--trainer.accelerator=cpu",
                        f"--trainer.devices={devices}", f"--trainer.strategy={strategy}", "--trainer.logger=false",
                        "--data.init_args.eval_batch_size=8", f"--trainer.default_root_dir={tmp_path / str(devices)}"]
                       for devices, strategy in runs))
    outputs = {devices: [json.loads(r) for r in (tmp_path / f"out{devices}.jsonl").read_text(
        encoding="utf-8").splitlines()] for devices, _ in runs}
    one, two = outputs[1], outputs[2]
    assert len(one) == len(two) == len(lines)  # every input exactly once
    assert [r["input"] for r in two] == lines  # in input order
    assert [r["output"] for r in two] == [r["output"] for r in one]
    for a, b in zip(one, two):
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert b["score"] == pytest.approx(a["score"], abs=1e-4)  # float noise of other batch shapes
    assert not list(tmp_path.glob(".out*.partial"))


def _predict_input(tmp_path: Path, n: int = 101) -> Path:
    src = tmp_path / "in.txt"
    pool = ["25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "Dienstag, 3. März 1998"]
    src.write_text("".join(f"{pool[i % 4]} {i}\n" for i in range(n)), encoding="utf-8")
    return src


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_ddp_predict_stops_when_one_rank_fails(ddp_run: Path, tmp_path: Path, mode: str) -> None:
    """A plugin callback fails on rank 1 only: raising (rank 0 stops within a batch or two, not after its
    share) or hanging (rank 0 stops after --sync_timeout). Either way every process ends, non-zero, with
    an error that names rank 1, and no output is written."""
    from tests.helpers.processes import cli, run_together

    out = tmp_path / "out.jsonl"
    callbacks = ["--trainer.callbacks+=tests.helpers.failing.FailOnRank", f"--trainer.callbacks.init_args.mode={mode}",
                 f"--trainer.callbacks.init_args.record={tmp_path}"]
    if mode == "raise":  # one second per batch: rank 0 has 7 batches to go when rank 1 fails after its first
        callbacks += ["--trainer.callbacks+=tests.helpers.slow.SlowDown", "--trainer.callbacks.init_args.seconds=1"]
    command = cli("predict", "-c", str(CONFIG), "--ckpt_path", str(min(ddp_run.rglob("last.ckpt"))),
                  f"--data.init_args.predict_path={_predict_input(tmp_path)}", "--output", str(out),
                  "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
                  "--trainer.logger=false", "--data.init_args.eval_batch_size=8", "--sync_timeout=5",
                  f"--trainer.default_root_dir={tmp_path}", *callbacks)
    (rc,), (log,), elapsed = run_together([command], timeout=180)
    assert rc != 0 and "DistributedPredictError" in log, log[-3000:]
    if mode == "raise":
        assert "distributed predict failed on rank 1 (host " in log
        assert "RuntimeError: a plugin callback failed on rank 1" in log
        assert int((tmp_path / "rank0.batches").read_text()) <= 4  # stopped early, not after its 7 batches
        assert not list(tmp_path.glob(".out*.partial"))
    else:
        assert "rank 1 did not come to the 'written' step within 5 s (--sync_timeout)" in log
    assert not out.exists()
    assert elapsed < 150

