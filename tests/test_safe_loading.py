"""No file is loaded unsafely during fit or resume, and Lightning has no reason to say "`weights_only` was
not set": every ``torch.load`` runs with ``weights_only=True``, and every checkpoint save says what it
writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_cli import CONFIG, ROOT, TINY

# Runs the CLI with torch.load wrapped: any load without weights_only=True is reported as a JSON line.
_WRAPPED = """
import json, sys, traceback
import torch
_load = torch.load
def load(*args, **kwargs):
    if kwargs.get("weights_only") is not True:
        where = "".join(traceback.format_stack(limit=6)[:-1])
        print("UNSAFE-LOAD " + json.dumps({"args": repr(args[:1]), "weights_only": repr(kwargs.get("weights_only")),
                                          "where": where}), flush=True)
    return _load(*args, **kwargs)
torch.load = load
from seq2seq_lightning.cli import main
main(sys.argv[1:])
"""


def _fit(*args: str) -> str:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _WRAPPED, "fit", "-c", str(CONFIG), *TINY, *args], cwd=ROOT,
                          env=env, check=False, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def test_fit_and_resume_load_nothing_unsafely(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _fit(f"--trainer.default_root_dir={run}", "--trainer.max_epochs=1")
    last = next(run.rglob("last.ckpt"))
    resumed = _fit(f"--trainer.default_root_dir={run}", "--trainer.max_epochs=2", f"--ckpt_path={last}")
    for out in (first, resumed):
        unsafe = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("UNSAFE-LOAD ")]
        assert not unsafe, f"loads without weights_only=True: {unsafe}"
        assert "`weights_only` was not set" not in out
    assert "Restoring states from the checkpoint path" in resumed  # the resume did load last.ckpt
    assert torch_step(last) > 0


def torch_step(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True)["global_step"])
