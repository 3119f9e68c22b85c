"""One way to build: plain-data hyperparameters, strategy overrides, encoder modality."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch

from seq2seq_lightning import CaptioningModule, TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.decoders.rnn import RNNDecoder
from seq2seq_lightning.encoders.rnn import RNNEncoder
from seq2seq_lightning.search.beam import BeamSearch

SMALL = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}
SMALL_DEC = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}
SENTENCES = ["7 Dec 2050", "Dienstag, 3. März 1998", "1 January 1900"]


@pytest.fixture(scope="module")
def data() -> DatesDataModule:
    dm = DatesDataModule(num_train=256, num_val=32, num_test=32, batch_size=32)
    dm.setup("fit")
    return dm


def fit_one_step(model: L.LightningModule, data: DatesDataModule, path: Path) -> Path:
    trainer = L.Trainer(max_steps=1, default_root_dir=path.parent, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return path


def test_a_configured_strategy_instance_keeps_the_checkpoint_plain(data: DatesDataModule, tmp_path: Path) -> None:
    """load_from_checkpoint(..., strategy=<instance>), one step of fit, save: the new checkpoint still
    loads with weights_only=True and rebuilds the same strategy."""
    torch.manual_seed(0)
    first = fit_one_step(TranslationModule(encoder=SMALL, decoder=SMALL_DEC, tokenizers=data.tokenizers), data,
                         tmp_path / "a.ckpt")
    model = TranslationModule.load_from_checkpoint(first, strategy=BeamSearch(beam_size=3, length_penalty=0.7))
    second = fit_one_step(model, data, tmp_path / "b.ckpt")
    raw = torch.load(second, weights_only=True)
    assert raw["hyper_parameters"]["strategy"] == {
        "class_path": "seq2seq_lightning.search.beam.BeamSearch", "init_args": {"beam_size": 3, "length_penalty": 0.7}}
    loaded = TranslationModule.load_from_checkpoint(second)
    assert isinstance(loaded.strategy, BeamSearch)
    assert (loaded.strategy.beam_size, loaded.strategy.length_penalty) == (3, 0.7)


def test_a_module_built_from_partials_and_instances_rebuilds_from_its_checkpoint(
        data: DatesDataModule, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TranslationModule(
        encoder=functools.partial(RNNEncoder, embedding_size=12, hidden_size=20, cell="lstm"),
        decoder=functools.partial(RNNDecoder, embedding_size=12, hidden_size=28, attention=False),
        strategy=BeamSearch(beam_size=2, n_best=2), tokenizers=data.tokenizers,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05))
    path = fit_one_step(model, data, tmp_path / "m.ckpt")
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["encoder"]["init_args"] == {"embedding_size": 12, "hidden_size": 20, "cell": "lstm"}
    assert hparams["optimizer"] == {"class_path": "torch.optim.sgd.SGD", "init_args": {"lr": 0.05}}
    loaded = TranslationModule.load_from_checkpoint(path)
    assert loaded.encoder.rnn.hidden_size == 20 and loaded.decoder.attention is None
    assert loaded.strategy.n_best == 2
    optimizer = loaded.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.05
    model.eval()
    assert loaded.translate(SENTENCES) == model.translate(SENTENCES)


def test_translate_kwargs_override_only_the_named_arguments(data: DatesDataModule) -> None:
    torch.manual_seed(0)
    model = TranslationModule(encoder=SMALL, decoder=SMALL_DEC, tokenizers=data.tokenizers,
                              strategy=BeamSearch(beam_size=3, length_penalty=0.7)).eval()
    search = model.build_strategy(beam_size=2)
    assert (search.beam_size, search.length_penalty) == (2, 0.7)
    assert model.translate(SENTENCES, beam_size=2) == model.translate(
        SENTENCES, strategy=BeamSearch(beam_size=2, length_penalty=0.7))
    with pytest.raises(ValueError, match="GreedySearch takes no beam_size"):
        TranslationModule(encoder=SMALL, decoder=SMALL_DEC, tokenizers=data.tokenizers).translate(SENTENCES, beam_size=2)
    fresh = model.build_strategy("beam", beam_size=2)  # a name rebuilds from the class defaults
    assert (fresh.beam_size, fresh.length_penalty) == (2, 0.0)


def test_an_encoder_of_the_wrong_modality_is_refused(data: DatesDataModule) -> None:
    with pytest.raises(ValueError, match=r"encoder 'cnn' reads image input, but TranslationModule"):
        TranslationModule(encoder={"class_path": "cnn", "init_args": {"backbone": "resnet18"}},
                          tokenizers=data.tokenizers)
    with pytest.raises(ValueError, match=r"encoder 'rnn' reads text input, but CaptioningModule"):
        CaptioningModule(encoder=functools.partial(RNNEncoder, 10), tokenizers={"target": data.tokenizers["target"]})


def test_decoders_are_built_by_registry_name(data: DatesDataModule) -> None:
    model = TranslationModule(encoder=SMALL, decoder="rnn", tokenizers=data.tokenizers)
    assert isinstance(model.decoder, RNNDecoder)
    with pytest.raises(KeyError, match="known decoder names: .*rnn"):
        TranslationModule(encoder=SMALL, decoder="nope", tokenizers=data.tokenizers)


def test_modules_compute_and_callbacks_observe() -> None:
    """No module imports from callbacks/ (examples, pictures and tables are collected by callbacks)."""
    import ast

    folder = Path(__file__).resolve().parents[2] / "seq2seq_lightning" / "modules"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith("seq2seq_lightning.callbacks") for n in names), (path.name, names)
