"""Tiny dates models shared by the shipping tests (quantize, average, ensemble)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.test_cli import CONFIG, ROOT, seq2seq

__all__ = ["CONFIG", "NUM", "ROOT", "SMALL", "seq2seq"]
NUM = ["--data.init_args.num_train=4000", "--data.init_args.num_val=50", "--data.init_args.num_test=300"]
SMALL = [
    *NUM, "--model.init_args.encoder.init_args.embedding_size=16",
    "--model.init_args.encoder.init_args.hidden_size=48", "--model.init_args.decoder.init_args.embedding_size=16",
    "--model.init_args.decoder.init_args.hidden_size=48",
    "--trainer.max_epochs=4", "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false",
    "--trainer.logger=false",
]


@pytest.fixture(scope="session")
def dates_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dates model trained by `seq2seq fit` (4 epochs on 4,000 examples, hidden size 48: about a minute
    on two cores; 99.7% exact match on its test split). A smaller one (2 epochs on 3,000, hidden size 32) was too
    unstable to test int8 against: with its near-ties, 10% of its beam-4 outputs changed under int8.

    ``SEQ2SEQ_SHIPPING_CKPT`` names a checkpoint of that same command to use instead (quick reruns)."""
    if os.environ.get("SEQ2SEQ_SHIPPING_CKPT"):
        return Path(os.environ["SEQ2SEQ_SHIPPING_CKPT"])
    run = tmp_path_factory.mktemp("dates_run")
    seq2seq("fit", "-c", str(CONFIG), *SMALL, f"--trainer.default_root_dir={run}")
    found = sorted(run.rglob("last.ckpt"))
    assert found, f"no last.ckpt under {run}"
    return found[-1]


@pytest.fixture(scope="session")
def test_sources() -> list[str]:
    """The 300 test sentences of the fixture model's data split."""
    from seq2seq_lightning.data.dates import DatesDataModule

    dm = DatesDataModule(num_train=4000, num_val=50, num_test=300)
    return [example.source for example in dm.examples("test")]


@pytest.fixture(scope="session")
def perturbed_ckpt(dates_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture model with every floating weight moved by seeded noise: a second model of the same
    architecture and tokenizers (another "seed")."""
    ckpt = torch.load(dates_ckpt, weights_only=True)
    gen = torch.Generator().manual_seed(1)
    ckpt["state_dict"] = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    path = tmp_path_factory.mktemp("perturbed") / "b.ckpt"
    torch.save(ckpt, path)
    return path
