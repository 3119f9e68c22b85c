"""Two-process DDP on CPU (gloo), driven through the CLI in subprocesses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.test_cli import CONFIG, TINY, seq2seq


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
    outputs = {}
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        out = tmp_path / f"out{devices}.jsonl"
        seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", ckpt, f"--data.init_args.predict_path={src}",
                "--output", str(out), "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
                f"--trainer.strategy={strategy}", "--trainer.logger=false", "--data.init_args.eval_batch_size=8",
                f"--trainer.default_root_dir={tmp_path / str(devices)}")
        outputs[devices] = [json.loads(r) for r in out.read_text(encoding="utf-8").splitlines()]
    one, two = outputs[1], outputs[2]
    assert len(one) == len(two) == len(lines)  # every input exactly once
    assert [r["input"] for r in two] == lines  # in input order
    assert [r["output"] for r in two] == [r["output"] for r in one]
    for a, b in zip(one, two):
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert b["score"] == pytest.approx(a["score"], abs=1e-4)  # float noise of other batch shapes
    assert not list(tmp_path.glob(".out*.partial"))
