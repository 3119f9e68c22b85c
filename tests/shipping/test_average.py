"""`seq2seq average`: the mean of the weights, a checkpoint that loads with weights_only=True and
translates, and clear errors for checkpoints of different architectures or tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.export.average import AverageError, average_checkpoints

from .conftest import seq2seq

if TYPE_CHECKING:
    from tests.conftest import Seq2SeqHere


def test_average_is_the_mean_and_translates(dates_ckpt: Path, perturbed_ckpt: Path, tmp_path: Path,
                                            test_sources: list[str]) -> None:
    out = tmp_path / "avg" / "mean.ckpt"
    proc = seq2seq("average", str(dates_ckpt), str(perturbed_ckpt), "--output", str(out))
    assert "averaged 2 checkpoints" in proc.stdout
    a, b = (torch.load(p, weights_only=True) for p in (dates_ckpt, perturbed_ckpt))
    c = torch.load(out, weights_only=True)
    assert c["state_dict"].keys() == a["state_dict"].keys()
    for key, value in c["state_dict"].items():
        assert value.dtype == a["state_dict"][key].dtype
        torch.testing.assert_close(value, (a["state_dict"][key] + b["state_dict"][key]) / 2, atol=1e-6, rtol=0)
    assert c["hyper_parameters"] == a["hyper_parameters"]
    assert not {"optimizer_states", "lr_schedulers", "loops", "callbacks", "rng_states"} & set(c)
    assert c["averaged_from"] == [str(dates_ckpt), str(perturbed_ckpt)]
    model = TranslationModule.load_from_checkpoint(out)
    outputs = model.translate(test_sources[:5], "beam", beam_size=2)
    assert len(outputs) == 5 and all(isinstance(o, str) for o in outputs)
    assert not list(out.parent.glob(".*.partial"))


def test_one_checkpoint_keeps_the_weights_and_integer_buffers_come_from_the_first(dates_ckpt: Path,
                                                                                 tmp_path: Path) -> None:
    a = torch.load(dates_ckpt, weights_only=True)
    for name, counter in (("x.ckpt", 3), ("y.ckpt", 7)):
        a["state_dict"]["extra.num_batches_tracked"] = torch.tensor(counter)
        torch.save(a, tmp_path / name)
    avg = average_checkpoints([tmp_path / "x.ckpt", tmp_path / "y.ckpt"])
    assert int(avg["state_dict"]["extra.num_batches_tracked"]) == 3
    single = average_checkpoints([dates_ckpt])["state_dict"]
    for key, value in a["state_dict"].items():
        if key != "extra.num_batches_tracked":
            assert torch.equal(single[key], value), key


def test_different_architecture_is_a_clear_error(seq2seq_here: Seq2SeqHere, dates_ckpt: Path,
                                                 tmp_path: Path) -> None:
    """`seq2seq average` in this process (the first test runs it in a real one)."""
    ckpt = torch.load(dates_ckpt, weights_only=True)
    other = TranslationModule(encoder={"class_path": "rnn", "init_args": {"hidden_size": 8}},
                              tokenizers=ckpt["hyper_parameters"]["tokenizers"])
    wider = dict(ckpt, state_dict=other.state_dict(), hyper_parameters=dict(other.hparams))
    torch.save(wider, tmp_path / "other.ckpt")
    proc = seq2seq_here("average", str(dates_ckpt), str(tmp_path / "other.ckpt"), "--output",
                        str(tmp_path / "x.ckpt"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{dates_ckpt} and {tmp_path / 'other.ckpt'} have different architectures" in proc.stderr
    assert "hyperparameter 'decoder'" in proc.stderr or "hyperparameter 'encoder'" in proc.stderr
    assert not (tmp_path / "x.ckpt").exists()
    # the same hyperparameters but other shapes (a hand-edited file): the key and both shapes are named
    ckpt_b = dict(ckpt, state_dict=dict(ckpt["state_dict"]))
    ckpt_b["state_dict"]["decoder.output.bias"] = torch.zeros(3)
    torch.save(ckpt_b, tmp_path / "shapes.ckpt")
    with pytest.raises(AverageError, match=r"decoder\.output\.bias is torch.float32 \(\d+,\) in the first and "
                                           r"torch.float32 \(3,\) in the second"):
        average_checkpoints([dates_ckpt, tmp_path / "shapes.ckpt"])
    del ckpt_b["state_dict"]["decoder.output.bias"]
    torch.save(ckpt_b, tmp_path / "keys.ckpt")
    with pytest.raises(AverageError, match=r"state_dict keys differ \(only the first has decoder\.output\.bias\)"):
        average_checkpoints([dates_ckpt, tmp_path / "keys.ckpt"])


def test_different_tokenizers_is_a_clear_error(seq2seq_here: Seq2SeqHere, dates_ckpt: Path,
                                               tmp_path: Path) -> None:
    ckpt = torch.load(dates_ckpt, weights_only=True)
    english = DatesDataModule(num_train=200, num_val=8, num_test=8, locales=["en_US"], ordinals=False)
    english.setup("fit")
    hparams = dict(ckpt["hyper_parameters"])
    hparams["tokenizers"] = dict(hparams["tokenizers"], source=english.tokenizers["source"])
    torch.save(dict(ckpt, hyper_parameters=hparams), tmp_path / "tok.ckpt")
    proc = seq2seq_here("average", str(dates_ckpt), str(tmp_path / "tok.ckpt"), "--output",
                        str(tmp_path / "x.ckpt"), check=False)
    assert proc.returncode == 2
    assert f"{dates_ckpt} and {tmp_path / 'tok.ckpt'} have different source tokenizers" in proc.stderr


def test_help_and_missing_file(seq2seq_here: Seq2SeqHere, tmp_path: Path) -> None:
    out = " ".join(seq2seq_here("average", "--help").stdout.split())
    assert "--output" in out and "integer buffers are taken from the first" in out
    proc = seq2seq_here("average", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path / "x.ckpt"), check=False)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
