"""kill -9 in the middle of fit, resume from last.ckpt: the same final weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from tests.test_cli import CONFIG, ROOT

ARGS = ["--data.init_args.num_train=600", "--data.init_args.num_val=30", "--data.init_args.batch_size=32",
        "--model.init_args.encoder.init_args.hidden_size=32", "--model.init_args.encoder.init_args.dropout=0.3",
        "--model.init_args.decoder.init_args.hidden_size=32", "--model.init_args.decoder.init_args.dropout=0.3",
        "--trainer.max_steps=60", "--trainer.max_epochs=-1", "--trainer.deterministic=true", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def config(tmp_path: Path, every: int, slow: float) -> Path:
    cfg = yaml.safe_load(CONFIG.read_text())
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("LastCheckpoint"):
            cb["init_args"]["every_n_train_steps"] = every
    cfg["trainer"]["callbacks"] += [{"class_path": "tests.helpers.slow.SlowDown", "init_args": {"seconds": slow}},
                                    {"class_path": "tests.helpers.slow.SaveFinal"}]
    path = tmp_path / f"resume-{slow}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def command(cfg: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seq2seq_lightning.cli", "fit", "-c", str(cfg), *ARGS,
            f"--trainer.default_root_dir={root}", *extra]


def env() -> dict[str, str]:
    return dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")


def weights(root: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(root / "checkpoints" / "final.ckpt", weights_only=True)
    assert ckpt["global_step"] == 60
    return ckpt["state_dict"]


def test_kill_9_and_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    fast = config(tmp_path, every=5, slow=0.0)
    slow = config(tmp_path, every=5, slow=0.15)
    straight = tmp_path / "straight"
    # the uninterrupted run alongside the broken one and its resume (neither needs the other)
    with tempfile.TemporaryFile() as log:
        uninterrupted = subprocess.Popen(command(fast, straight), cwd=ROOT, env=env(), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            broken = tmp_path / "broken"
            proc = subprocess.Popen(command(slow, broken), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            last = broken / "checkpoints" / "last.ckpt"
            deadline = time.time() + 240
            step = 0
            while time.time() < deadline and proc.poll() is None:
                if last.exists():
                    try:
                        step = torch.load(last, weights_only=True)["global_step"]
                    except Exception:  # noqa: BLE001 - the atomic rename means this should never happen
                        raise AssertionError("last.ckpt was readable-incomplete: saves are not atomic")
                    if step >= 25:
                        break
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            assert 25 <= step < 60, f"the run was not killed in the middle (step {step})"
            assert step % 19 != 0  # inside an epoch: 600 examples / 32 = 19 batches an epoch

            subprocess.run(command(fast, broken, f"--ckpt_path={last}"), cwd=ROOT, env=env(), check=True,
                           capture_output=True, timeout=300)
            code = uninterrupted.wait(timeout=300)
        finally:
            if uninterrupted.poll() is None:
                os.killpg(uninterrupted.pid, signal.SIGKILL)
                uninterrupted.wait()
        log.seek(0)
        assert code == 0, f"the uninterrupted run failed ({code}):\n{log.read().decode(errors='replace')[-3000:]}"
    a, b = weights(straight), weights(broken)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run by {worst}"
