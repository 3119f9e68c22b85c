"""Forced decoding: the score of a search's own output is the log_prob the search reported for it,
for every built-in strategy, from token ids and through text with ``score()``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from seq2seq_lightning import CaptioningModule, TranslationModule
from seq2seq_lightning.analysis.scoring import ForcedScore, forced_scores, score_texts, score_token_ids
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.data.shapes import ShapesDataModule
from seq2seq_lightning.search.base import Hypothesis, SearchStrategy
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.greedy import GreedySearch
from seq2seq_lightning.search.sampling import SamplingSearch

SMALL = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 32}}
SMALL_DEC = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 32}}
SOURCES = ["25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "tuesday 4 july 2000", "1 January 2001", ""]
STRATEGIES = {
    "greedy": GreedySearch(),
    "beam": BeamSearch(beam_size=4, n_best=4),
    "beam-lp1": BeamSearch(beam_size=4, length_penalty=1.0, n_best=4),
    "sampling": SamplingSearch(seed=7),
    "sampling-t0.7-k5": SamplingSearch(temperature=0.7, top_k=5, seed=3),
}


def trainer(root: Path, epochs: int = 1) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, limit_val_batches=0, default_root_dir=root, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)


@pytest.fixture(scope="module")
def data() -> DatesDataModule:
    dm = DatesDataModule(num_train=512, num_val=32, num_test=32, batch_size=32)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def untrained(data: DatesDataModule) -> TranslationModule:
    """A random tiny model whose EOS is made likely, so searches end with EOS at varied lengths."""
    torch.manual_seed(0)
    model = TranslationModule(encoder=SMALL, decoder=SMALL_DEC, tokenizers=data.tokenizers, max_len_b=6).eval()
    with torch.no_grad():
        model.decoder.output.bias[model.target_tokenizer.eos_id] += 2.5
    return model


@pytest.fixture(scope="module")
def dates(data: DatesDataModule, tmp_path_factory: pytest.TempPathFactory) -> TranslationModule:
    """A tiny dates model trained briefly: its outputs are date-shaped and end with EOS."""
    torch.manual_seed(0)
    model = TranslationModule(encoder=SMALL, decoder=SMALL_DEC, tokenizers=data.tokenizers, label_smoothing=0.0,
                              optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}})
    trainer(tmp_path_factory.mktemp("dates"), epochs=3).fit(model, datamodule=data)
    return model.eval()


def check_hypotheses(model: TranslationModule, sources: list[str], strategy: SearchStrategy) -> tuple[int, int]:
    """Every hypothesis' forced score equals its log_prob (one with EOS: the whole score; one closed at
    its length limit: the score without the EOS term). Returns (with EOS, closed at the limit)."""
    batch = model.make_batch([model.source_tokenizer.encode(s) for s in sources])
    limits = model.max_lengths(batch).tolist()
    found = model.search(batch, strategy)
    flat: list[tuple[int, Hypothesis]] = [(i, h) for i, hyps in enumerate(found) for h in hyps]
    rows = model.make_batch([model.source_tokenizer.encode(sources[i]) for i, _ in flat])
    scores = score_token_ids(model, rows, [h.tokens for _, h in flat])
    ended = closed = 0
    for (i, h), s in zip(flat, scores):
        assert s.tokens == len(h.tokens) + 1 and len(s.token_log_probs) == s.tokens
        if len(h.tokens) < limits[i]:  # ended with EOS within the limit
            assert s.log_prob == pytest.approx(h.log_prob, abs=1e-4), (sources[i], h.tokens)
            ended += 1
        else:  # closed at max_len: its log_prob has no EOS term
            assert sum(s.token_log_probs[:-1]) == pytest.approx(h.log_prob, abs=1e-4), (sources[i], h.tokens)
            closed += 1
    return ended, closed


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_forced_score_of_a_strategy_output_is_its_log_prob(untrained: TranslationModule, name: str) -> None:
    ended, _ = check_hypotheses(untrained, SOURCES, STRATEGIES[name])
    assert ended > 0  # the EOS term is compared too


def test_trained_model_beam_outputs(dates: TranslationModule) -> None:
    for name in ("greedy", "beam", "beam-lp1"):
        ended, _ = check_hypotheses(dates, SOURCES, STRATEGIES[name])
        assert ended > 0


@pytest.mark.parametrize("name", ["greedy", "beam", "beam-lp1", "sampling"])
def test_score_text_round_trip(dates: TranslationModule, name: str) -> None:
    """score(sources, decoded outputs) == the outputs' log_prob, when the text encodes back to the ids."""
    batch = dates.make_batch([dates.source_tokenizer.encode(s) for s in SOURCES])
    limits = dates.max_lengths(batch).tolist()
    best = [hyps[0] for hyps in dates.search(batch, STRATEGIES[name])]
    texts = [dates.target_tokenizer.decode(h.tokens) for h in best]
    scores = dates.score(SOURCES, texts)
    compared = 0
    for i, (h, text, score) in enumerate(zip(best, texts, scores)):
        if dates.target_tokenizer.encode(text) != h.tokens or len(h.tokens) >= limits[i]:
            continue  # no exact text round trip, or closed at max_len (no EOS term in its log_prob)
        assert score == pytest.approx(h.log_prob, abs=1e-4), text
        compared += 1
    assert compared >= len(SOURCES) // 2


def test_a_wrong_target_scores_lower(dates: TranslationModule) -> None:
    outputs = dates.translate(SOURCES[:4], strategy="beam", beam_size=4)
    right = dates.score(SOURCES[:4], outputs)
    wrong = dates.score(SOURCES[:4], ["1899-12-31" if o != "1899-12-31" else "2000-01-01" for o in outputs])
    assert all(w < r for w, r in zip(wrong, right))


def test_score_is_in_input_order_and_independent_of_batching(dates: TranslationModule) -> None:
    sources = SOURCES * 3
    targets = ["2009-06-25", "", "1950-06-01", "x", "2001-01-01 and more", "1998"] * 3
    together = dates.score(sources, targets)
    dates.batch_size = 1
    try:
        alone = dates.score(sources, targets)
    finally:
        dates.batch_size = 64
    assert together == pytest.approx(alone, abs=1e-5)
    assert together[:6] == pytest.approx(together[6:12], abs=1e-5)
    empty = dates.score(["3 mars 1998"], [""])  # the EOS alone
    details = score_texts(dates, [dates.source_tokenizer.encode("3 mars 1998")], [""], dates.make_batch, 4)
    assert details[0].tokens == 1 and details[0].log_prob == pytest.approx(empty[0], abs=1e-6)
    with pytest.raises(ValueError, match="2 inputs but 1 targets"):
        dates.score(["a", "b"], ["c"])


def test_forced_scores_ignore_padding_and_restore_the_mode(dates: TranslationModule) -> None:
    ids = [dates.target_tokenizer.encode("2009-06-25")]
    batch = dates.make_batch([dates.source_tokenizer.encode("25th of June, 2009")])
    (plain,) = score_token_ids(dates, batch, ids)
    tok = dates.target_tokenizer
    target = torch.tensor([[tok.bos_id, *ids[0], tok.eos_id] + [tok.pad_id] * 5])
    padded = dataclasses.replace(batch, target=target, target_lengths=None)  # lengths from the pad positions
    (again,) = forced_scores(dates, padded)
    assert isinstance(again, ForcedScore) and again.tokens == plain.tokens == 11
    assert again.log_prob == pytest.approx(plain.log_prob, abs=1e-6)
    dates.train()
    try:
        (in_train_mode,) = score_token_ids(dates, batch, ids)  # dropout off for the pass all the same
        assert dates.training and in_train_mode.log_prob == pytest.approx(plain.log_prob, abs=1e-6)
    finally:
        dates.eval()
    with pytest.raises(ValueError, match="batch.target"):
        forced_scores(dates, batch)


# -- captioning ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def captioner(tmp_path_factory: pytest.TempPathFactory) -> CaptioningModule:
    data = ShapesDataModule(num_train=64, num_val=8, num_test=8, image_size=32, batch_size=16, max_shapes=2)
    torch.manual_seed(0)
    model = CaptioningModule(encoder={"class_path": "cnn", "init_args": {"width_mult": 0.125, "projection_size": 16}},
                             decoder={"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 16}},
                             tokenizers=data.tokenizers, max_len=12)
    trainer(tmp_path_factory.mktemp("shapes")).fit(model, datamodule=data)
    return model.eval()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(folder / "b.png")
    Image.new("RGBA", (40, 20), (255, 0, 0, 128)).save(folder / "c.png")
    return [str(folder / n) for n in ("a.jpg", "b.png", "c.png")]


def test_captioning_score_of_its_own_captions(captioner: CaptioningModule, image_files: list[str]) -> None:
    images = [*image_files, Image.open(image_files[0])]  # paths and a PIL image
    strategy = BeamSearch(beam_size=3)
    best = [hyps[0] for hyps in captioner.search(captioner.make_batch(images), strategy)]
    captions = [captioner.target_tokenizer.decode(h.tokens) for h in best]
    assert captions == captioner.caption(images, strategy=strategy)
    scores = captioner.score(images, captions)
    compared = 0
    for h, caption, score in zip(best, captions, scores):
        if captioner.target_tokenizer.encode(caption) == h.tokens and len(h.tokens) < captioner.max_len:
            assert score == pytest.approx(h.log_prob, abs=1e-4), caption
            compared += 1
    assert compared >= 2
    assert scores[0] == pytest.approx(scores[3], abs=1e-5)  # the path and the opened file
    wrong = captioner.score(images[:1], [captions[0] + " " + captions[0]])
    assert wrong[0] < scores[0]
