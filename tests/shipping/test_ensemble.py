"""seq2seq_lightning.Ensemble: probabilities averaged over members as one StepDecoder; Ensemble([A, A]) is A;
step log-probs are the log of the mean of the members' probabilities; mismatched target tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import seq2seq_lightning
from seq2seq_lightning import TranslationModule
from seq2seq_lightning.data.dates import DatesDataModule
from seq2seq_lightning.export.ensemble import Ensemble, EnsembleError, mean_log_probs
from seq2seq_lightning.registry import STRATEGIES


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def a(dates_ckpt: Path) -> TranslationModule:
    return TranslationModule.load_from_checkpoint(dates_ckpt).eval()


@pytest.fixture(scope="module")
def ab(dates_ckpt: Path, perturbed_ckpt: Path) -> Ensemble:
    return seq2seq_lightning.Ensemble([dates_ckpt, str(perturbed_ckpt)])


def start(ens: Ensemble, sources: list[str]) -> tuple[tuple, torch.Tensor]:
    """The ensemble's initial state over ``sources`` and a BOS per row."""
    encoded = [m.encode(m.make_batch([m.source_tokenizer.encode(s) for s in sources])) for m in ens.members]
    bos = torch.full((len(sources),), ens.target_tokenizer.bos_id, dtype=torch.long)
    return ens.decoder.init_state(encoded), bos


@pytest.mark.parametrize("strategy,kwargs", [("greedy", {}), ("beam", {"beam_size": 4}),
                                             ("beam", {"beam_size": 3, "n_best": 2, "length_penalty": 1.0})])
def test_twice_the_same_model_is_that_model(a: TranslationModule, dates_ckpt: Path, test_sources: list[str],
                                            strategy: str, kwargs: dict) -> None:
    ens = Ensemble([a, dates_ckpt])
    sources = test_sources[:40] + ["", "  "]
    assert ens.translate(sources, strategy, **kwargs) == a.translate(sources, strategy, **kwargs)
    rows = [a.source_tokenizer.encode(s) for s in test_sources[:16]]
    search = a.build_strategy(strategy, **kwargs)
    mine, theirs = ens.search([rows, rows], search), a.search(a.make_batch(rows), search)
    assert [[(h.tokens, h.log_prob, h.score) for h in r] for r in mine] == \
        [[(h.tokens, h.log_prob, h.score) for h in r] for r in theirs]


def test_step_is_log_of_mean_probability(ab: Ensemble, test_sources: list[str]) -> None:
    state, bos = start(ab, test_sources[:5])
    log_probs, new_state = ab.decoder.step(bos, state)
    members = [m.decoder.step(bos, s)[0] for m, s in zip(ab.members, state)]
    assert not torch.allclose(members[0], members[1], atol=1e-3)  # two different models
    expected = torch.log((members[0].exp() + members[1].exp()) / 2)
    assert log_probs.dtype == torch.float32 and log_probs.shape == members[0].shape
    torch.testing.assert_close(log_probs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(5), atol=1e-5, rtol=0)  # normalised
    assert isinstance(new_state, tuple) and len(new_state) == 2


def test_reorder_state_picks_repeats_and_drops_rows(ab: Ensemble, test_sources: list[str]) -> None:
    state, bos = start(ab, test_sources[:4])
    _, state = ab.decoder.step(bos, state)
    tokens = torch.tensor([7, 8, 9, 10])
    full, _ = ab.decoder.step(tokens, state)
    index = torch.tensor([2, 2, 0])
    picked, _ = ab.decoder.step(tokens[index], ab.decoder.reorder_state(state, index))
    torch.testing.assert_close(picked, full[index])


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_strategy_searches_the_ensemble(ab: Ensemble, test_sources: list[str], name: str) -> None:
    """Each hypothesis' log_prob is the ensemble's log-probability of its tokens (forced, step by step)."""
    m = ab.members[0]
    kwargs = {"sampling": {"seed": 0}, "exact": {"max_expansions": 2000}}.get(name, {})
    rows = [m.source_tokenizer.encode(s) for s in test_sources[:3]]
    found = ab.search([rows, rows], ab.build_strategy(name, **kwargs))
    assert len(found) == 3
    eos = ab.target_tokenizer.eos_id
    for i, hyps in enumerate(found):
        assert hyps and all(eos not in h.tokens for h in hyps)
        state, token = start(ab, [test_sources[i]])
        total = 0.0
        limit = max(int(x.max_lengths(x.make_batch([x.source_tokenizer.encode(test_sources[i])])))
                    for x in ab.members)
        steps = hyps[0].tokens + ([eos] if len(hyps[0].tokens) < limit else [])
        for t in steps:
            log_probs, state = ab.decoder.step(token, state)
            total += float(log_probs[0, t])
            token = torch.tensor([t])
        assert abs(total - hyps[0].log_prob) < 1e-3, (name, total, hyps[0].log_prob)


def test_different_target_tokenizers_are_refused(a: TranslationModule, dates_ckpt: Path) -> None:
    source_json = a.hparams.tokenizers["source"]
    other = TranslationModule(tokenizers={"source": source_json, "target": source_json})  # another target vocabulary
    with pytest.raises(EnsembleError, match=rf"{dates_ckpt} and member 1 \(TranslationModule\) have different "
                                            "target tokenizers"):
        Ensemble([dates_ckpt, other])
    # a different source tokenizer is fine: each member reads the source with its own
    english = DatesDataModule(num_train=200, num_val=8, num_test=8, locales=["en_US"], ordinals=False)
    english.setup("fit")
    assert english.tokenizers["source"] != source_json
    same_target = TranslationModule(tokenizers={"source": english.tokenizers["source"],
                                                "target": a.hparams.tokenizers["target"]})
    assert len(Ensemble([a, same_target]).translate(["June 3, 1999", ""])) == 2


def test_mean_log_probs_keeps_impossible_tokens_impossible() -> None:
    inf = float("-inf")
    lp = torch.tensor([[[inf, 0.0], [-0.5, -1.0]], [[inf, 0.0], [inf, -0.2]]]).log_softmax(-1)  # (M=2, N=2, V=2)
    out = mean_log_probs(lp)
    assert out[0, 0] == inf and torch.isfinite(out[1]).all()
    torch.testing.assert_close(out.logsumexp(-1), torch.zeros(2))
