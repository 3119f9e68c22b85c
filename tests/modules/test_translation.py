"""TranslationModule: loss, metrics, translate(), checkpoints that load with weights_only=True."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.search.beam import BeamSearch

SMALL = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}
SMALL_DEC = {"class_path": "seq2seq_lightning.decoders.rnn.RNNDecoder",
             "init_args": {"embedding_size": 16, "hidden_size": 24}}


@pytest.fixture(scope="module")
def data() -> DatesDataModule:
    dm = DatesDataModule(num_train=256, num_val=32, num_test=32, batch_size=32)
    dm.setup("fit")
    return dm


def make_module(data: DatesDataModule, **kw) -> TranslationModule:
    torch.manual_seed(0)
    return TranslationModule(encoder=SMALL, decoder=SMALL_DEC, tokenizers=data.tokenizers, **kw)


def test_loss_ignores_padding(data: DatesDataModule) -> None:
    model = make_module(data, label_smoothing=0.1).eval()
    batch = next(iter(data.train_dataloader()))
    logits, _ = model(batch)
    assert logits.shape[:2] == batch.target[:, 1:].shape
    one = batch.rows([0])
    n = int(one.target_lengths[0])
    trimmed = dataclasses.replace(one, target=one.target[:, :n])
    padded = dataclasses.replace(one, target=torch.cat([one.target[:, :n], torch.zeros(1, 7, dtype=torch.long)], dim=1))
    model.log = lambda *a, **k: None  # no trainer attached
    torch.testing.assert_close(model._loss(trimmed, "train"), model._loss(padded, "train"))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_loss_is_label_smoothed_cross_entropy(data: DatesDataModule, smoothing: float) -> None:
    """The loss shares one log-softmax with the reported nll; it must equal PyTorch's own loss."""
    model = make_module(data, label_smoothing=smoothing).eval()
    batch = next(iter(data.train_dataloader()))
    model.log = lambda *a, **k: None  # no trainer attached
    logits, _ = model(batch)
    gold = batch.target[:, 1:].reshape(-1)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), gold,
                                                 ignore_index=model.target_tokenizer.pad_id,
                                                 label_smoothing=smoothing)
    torch.testing.assert_close(model._loss(batch, "train"), expected)


def test_training_reduces_loss_and_logs_metrics(data: DatesDataModule, tmp_path: Path) -> None:
    model = make_module(data)
    trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    trainer.fit(model, datamodule=data)
    after = trainer.callback_metrics["val/loss"].item()
    assert after < before
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/ppl", "val/bleu", "val/token_accuracy"):
        assert key in metrics, key
    assert 0.0 <= metrics["val/bleu"].item() <= 100.0
    test = trainer.test(model, datamodule=data, verbose=False)[0]
    assert 0.0 <= test["test/exact_match"] <= 1.0 and "test/bleu" in test
    assert float(test["test/ppl"]) == pytest.approx(float(torch.exp(torch.tensor(test["test/loss"]))), rel=0.3)


def test_translate_keeps_order_and_empty_lines(data: DatesDataModule) -> None:
    model = make_module(data)
    sentences = ["25th of June, 2009", "", "   ", "3 mars 1998", "June 1st 1950"]
    greedy = model.translate(sentences)
    assert len(greedy) == len(sentences) and greedy[1] == "" and greedy[2] == ""
    # beam_size=1 equals greedy; results do not depend on batch composition
    assert model.translate(sentences, strategy="beam", beam_size=1) == greedy
    assert [model.translate([s])[0] for s in sentences] == greedy
    assert model.translate(sentences, strategy=BeamSearch(beam_size=3)) == model.translate(
        sentences, strategy="beam", beam_size=3)
    with pytest.raises(KeyError, match="known strategy names"):
        model.translate(sentences, strategy="bem")


def test_checkpoint_loads_weights_only_and_translates_the_same(data: DatesDataModule, tmp_path: Path) -> None:
    model = make_module(data)
    trainer = L.Trainer(max_steps=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # plain data only: no pickled objects
    assert set(raw["hyper_parameters"]["tokenizers"]) == {"source", "target"}
    loaded = TranslationModule.load_from_checkpoint(path, weights_only=True)
    sentences = ["7 Dec 2050", "Dienstag, 3. März 1998"]
    assert loaded.translate(sentences, strategy="beam", beam_size=2) == model.translate(
        sentences, strategy="beam", beam_size=2)


def test_needs_tokenizers() -> None:
    with pytest.raises(ValueError, match="tokenizers"):
        TranslationModule(encoder=SMALL)


def test_optimizer_and_scheduler_are_configurable(data: DatesDataModule) -> None:
    from functools import partial

    model = make_module(data, optimizer=partial(torch.optim.SGD, lr=0.5),
                        lr_scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=1))
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD) and config["optimizer"].defaults["lr"] == 0.5
    assert config["lr_scheduler"]["monitor"] == "val/loss"
    step = make_module(data, lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=2))
    config = step.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert isinstance(make_module(data).configure_optimizers(), torch.optim.Adam)


def test_bf16_mixed_computes_loss_in_float32(data: DatesDataModule, tmp_path: Path) -> None:
    model = make_module(data)
    seen: dict[str, torch.dtype] = {}
    forward = model.forward

    def spy(batch):
        logits, attn = forward(batch)
        seen["logits"] = logits.dtype
        return logits, attn

    model.forward = spy
    loss_fn = model._loss

    def loss_spy(batch, stage):
        loss = loss_fn(batch, stage)
        seen["loss"] = loss.dtype
        return loss

    model._loss = loss_spy
    trainer = L.Trainer(max_steps=2, precision="bf16-mixed", default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert seen["logits"] == torch.bfloat16 and seen["loss"] == torch.float32
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_search_passes_row_limits_only_to_strategies_that_take_them(data: DatesDataModule) -> None:
    model = make_module(data).eval()
    sentences = ["3 mars 1998", "Tuesday, June 25, 2009", "1/2/03", "the 1st of January, 1900"]
    batch = model.make_batch([model.source_tokenizer.encode(s) for s in sentences])
    assert len(set(model.max_lengths(batch).tolist())) > 1  # rows with different limits

    calls: list[int] = []

    class Counting(BeamSearch):
        def search(self, decoder, state, *, batch_size, bos, eos, max_len, max_lens=None):
            calls.append(batch_size)
            return super().search(decoder, state, batch_size=batch_size, bos=bos, eos=eos, max_len=max_len,
                                  max_lens=max_lens)

    class OldStyle(BeamSearch):  # overrides search without max_lens: searched group by group
        def search(self, decoder, state, *, batch_size, bos, eos, max_len):
            calls.append(batch_size)
            return super().search(decoder, state, batch_size=batch_size, bos=bos, eos=eos, max_len=max_len)

    together = model.search(batch, Counting(beam_size=3))
    assert calls == [len(sentences)]
    calls.clear()
    grouped = model.search(batch, OldStyle(beam_size=3))
    assert len(calls) == len(set(model.max_lengths(batch).tolist())) and sum(calls) == len(sentences)
    assert [h[0].tokens for h in together] == [h[0].tokens for h in grouped]
