"""Prefixes and constraints through a real (tiny, untrained) TranslationModule: search, translate, predict rows."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule

SMALL = {"class_path": "rnn", "init_args": {"embedding_size": 16, "hidden_size": 24}}
SOURCES = ["25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "12/01/1999", "Dienstag, 3. März 1998"]
STRATEGIES = ["greedy", "beam", "sampling", "constrained_beam"]
if importlib.util.find_spec("seq2seq_lightning.search.exact") is not None:
    STRATEGIES.append("exact")


@pytest.fixture(scope="module")
def model() -> TranslationModule:
    dm = DatesDataModule(num_train=256, num_val=32, num_test=32, batch_size=32)
    dm.setup("fit")
    torch.manual_seed(0)
    return TranslationModule(encoder=SMALL, decoder=SMALL, tokenizers=dm.tokenizers, batch_size=3).eval()


def forced_log_prob(model: TranslationModule, source: str, tokens: list[int], ended: bool) -> float:
    """The model's log-probability of ``tokens`` (+ EOS) given ``source``, by teacher forcing."""
    tok = model.target_tokenizer
    batch = model.make_batch([model.source_tokenizer.encode(source)])
    seq = tokens + [tok.eos_id] * int(ended)
    with torch.no_grad():
        logits, _ = model.decoder(torch.tensor([[tok.bos_id, *seq[:-1]]]) if seq else torch.zeros(1, 0).long(),
                                  model.encode(batch))
    logp = logits.float().log_softmax(-1)[0]
    return float(sum(logp[i, t] for i, t in enumerate(seq)))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_translations_start_with_their_prefix(model: TranslationModule, strategy: str) -> None:
    prefixes = ["2009-", None, "19", "1999-12-01", ""]
    kwargs = {"seed": 0} if strategy == "sampling" else {"max_expansions": 200} if strategy == "exact" else {}
    out = model.translate(SOURCES, strategy, prefixes=prefixes, **kwargs)
    for prefix, text in zip(prefixes, out):
        assert text.startswith(prefix or "")


def test_the_score_of_a_prefixed_output_is_its_forced_decoding_score(model: TranslationModule) -> None:
    tok = model.target_tokenizer
    batch = model.make_batch([model.source_tokenizer.encode(s) for s in SOURCES])
    batch.prefix = [tok.encode(p) for p in ["2009-", "", "19", "1999-12-01", "3"]]
    limits = model.max_lengths(batch).tolist()
    for strategy in (model.build_strategy("beam", beam_size=3, n_best=2), model.build_strategy("greedy")):
        for source, prefix, limit, hyps in zip(SOURCES, batch.prefix, limits, model.search(batch, strategy)):
            for h in hyps:
                assert h.tokens[: len(prefix)] == prefix
                want = forced_log_prob(model, source, h.tokens, len(h.tokens) < limit)
                assert h.log_prob == pytest.approx(want, abs=1e-4)


def test_a_prefix_longer_than_the_limit_gets_room(model: TranslationModule) -> None:
    short = TranslationModule(encoder=SMALL, decoder=SMALL, tokenizers=model.hparams.tokenizers,
                              max_len_a=0.0, max_len_b=2).eval()
    short.load_state_dict(model.state_dict())
    assert max(len(t) for t in short.translate(SOURCES, "greedy")) <= 2
    for strategy in ("greedy", "beam"):
        out = short.translate(SOURCES[:2], strategy, prefixes=["2009-06-25", "1998-03-0"])
        assert out[0].startswith("2009-06-25") and out[1].startswith("1998-03-0")


def test_constrained_translations_hold_every_phrase(model: TranslationModule) -> None:
    constraints = [["-06-", "2009"], ["1998"], [], ["12", "-01-", "99"], ["03-"]]
    out = model.translate(SOURCES, "constrained_beam", constraints=constraints, beam_size=6)
    for phrases, text in zip(constraints, out):
        assert all(p in text for p in phrases), (text, phrases)
    both = model.translate(SOURCES[:2], "constrained_beam", prefixes=["19", "2"], constraints=[["-0"], ["55"]])
    assert both[0].startswith("19") and "-0" in both[0] and both[1].startswith("2") and "55" in both[1]


def test_without_constraints_constrained_beam_is_beam(model: TranslationModule) -> None:
    for kwargs in ({"beam_size": 1}, {"beam_size": 4, "length_penalty": 1.0}):
        assert model.translate(SOURCES, "constrained_beam", **kwargs) == model.translate(SOURCES, "beam", **kwargs)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sampling"])
def test_constraints_need_a_strategy_that_takes_them(model: TranslationModule, strategy: str) -> None:
    with pytest.raises(ValueError, match=rf"strategy '{strategy}' does not take constraints.*constrained_beam"):
        model.translate(SOURCES[:2], strategy, constraints=[["19"], []])
    assert model.translate(SOURCES[:2], strategy, constraints=[[], []], **({"seed": 0} if strategy == "sampling"
                                                                          else {}))  # none given: fine


def test_prefixes_and_constraints_give_one_entry_per_sentence(model: TranslationModule) -> None:
    with pytest.raises(ValueError, match="prefixes must have one entry per sentence"):
        model.translate(SOURCES, prefixes=["1"])
    with pytest.raises(ValueError, match="constraints must have one entry per sentence"):
        model.translate(SOURCES, "constrained_beam", constraints=[["1"]])


def test_predict_rows_of_unreadable_inputs_are_empty_and_carry_their_error(model: TranslationModule) -> None:
    batch = model.make_batch([model.source_tokenizer.encode(s) for s in ["3 mars 1998", "", "Jun 1, 1950"]])
    batch.source_text = ["3 mars 1998", "{bad", "Jun 1, 1950"]
    batch.errors = [None, "line 2 of in.jsonl: invalid JSON", None]
    batch.prefix = [model.target_tokenizer.encode("19"), [], []]
    rows = model.predict_step(batch, 0)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[1]["output"] == "" and rows[1]["nbest"] == [] and rows[1]["score"] is None
    assert rows[1]["error"] == "line 2 of in.jsonl: invalid JSON" and rows[1]["input"] == "{bad"
    assert "error" not in rows[0] and rows[0]["output"].startswith("19") and rows[2]["nbest"]
