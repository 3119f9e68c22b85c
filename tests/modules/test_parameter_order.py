"""Parameter order: the decoder is registered first (a seeded run's summation order), and a checkpoint
saved with the parameters in another order (encoder first, as some earlier versions wrote) resumes with
each parameter's own optimizer moments."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import lightning as L
import torch

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule

SMALL = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}


def make(data: DatesDataModule) -> TranslationModule:
    torch.manual_seed(0)
    return TranslationModule(encoder=SMALL, decoder=SMALL, tokenizers=data.tokenizers)


def trainer(root: Path, steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                     default_root_dir=root, deterministic=True)


def encoder_first(ckpt: dict, names: list[str]) -> dict:
    """The checkpoint as a version registering the encoder first would have written it."""
    order = [n for n in names if n.startswith("encoder.")] + [n for n in names if not n.startswith("encoder.")]
    sd = ckpt["state_dict"]
    ckpt = dict(ckpt, state_dict=OrderedDict([(k, sd[k]) for k in order] + [(k, v) for k, v in sd.items()
                                                                            if k not in order]))
    opt = ckpt["optimizer_states"][0]
    current = {n: i for i, n in enumerate(names)}
    ckpt["optimizer_states"] = [dict(opt, state={j: opt["state"][current[n]] for j, n in enumerate(order)})]
    return ckpt


def test_decoder_parameters_come_first(tmp_path: Path) -> None:
    data = DatesDataModule(num_train=64, num_val=8, num_test=8, batch_size=16)
    data.setup("fit")
    names = [n for n, _ in make(data).named_parameters()]
    assert names[0].startswith("decoder.") and names[-1].startswith("encoder.")
    assert {n.split(".")[0] for n in names} == {"decoder", "encoder"}


def test_checkpoint_of_another_parameter_order_resumes_the_same(tmp_path: Path) -> None:
    data = DatesDataModule(num_train=64, num_val=8, num_test=8, batch_size=16)
    model = make(data)
    t = trainer(tmp_path, 3)
    t.fit(model, datamodule=data)
    saved = tmp_path / "step3.ckpt"
    t.save_checkpoint(saved)
    names = [n for n, _ in model.named_parameters()]
    ckpt = torch.load(saved, weights_only=True)
    other = tmp_path / "encoder_first.ckpt"
    torch.save(encoder_first(ckpt, names), other)
    assert next(iter(torch.load(other, weights_only=True)["state_dict"])).startswith("encoder.")

    finals = []
    for path in (saved, other):
        resumed = make(data)
        trainer(tmp_path, 5).fit(resumed, datamodule=data, ckpt_path=path)
        finals.append(resumed.state_dict())
    for key, value in finals[0].items():
        torch.testing.assert_close(finals[1][key], value, rtol=0, atol=0, msg=key)
