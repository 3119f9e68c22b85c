"""Registry discovery, tested with fake distributions placed on sys.path (nothing installed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from seq2seq_lightning.registry import ENCODERS, STRATEGIES, Registry, RegistryError, resolve_name
from seq2seq_lightning.search.base import SearchStrategy


def fake_dist(root: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """A distribution as importlib.metadata sees it: a .dist-info folder plus its modules."""
    info = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))


GOOD = """
from seq2seq_lightning.search.greedy import GreedySearch
class MyGreedy(GreedySearch):
    '''A plugin strategy.'''
"""


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A fresh strategies registry reading tmp_path's fake distributions too."""
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("seq2seq_lightning.strategies", "seq2seq_lightning.search.base:SearchStrategy", "strategy")
    return tmp_path, reg


def test_builtins_registered_through_entry_points() -> None:
    assert {"greedy", "beam", "sampling"} <= set(STRATEGIES.names())
    assert "rnn" in ENCODERS.names()
    entry = STRATEGIES.entry("beam")
    assert entry.dist == "seq2seq-lightning"
    assert entry.class_path == "seq2seq_lightning.search.beam.BeamSearch"
    beam = STRATEGIES.build("beam", beam_size=3)
    assert isinstance(beam, SearchStrategy) and beam.beam_size == 3


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(RegistryError) as err:
        STRATEGIES.get("bem")
    message = str(err.value)
    assert "unknown strategy 'bem'" in message
    for name in ("beam", "greedy", "sampling"):
        assert name in message


def test_plugin_is_discovered(fresh) -> None:
    root, reg = fresh
    fake_dist(root, "good-plugin", {"seq2seq_lightning.strategies": {"mygreedy": "good_mod:MyGreedy"}},
              {"good_mod": GOOD})
    assert "mygreedy" in reg.names()
    entry = reg.entry("mygreedy")
    assert (entry.dist, entry.version) == ("good-plugin", "1.2.3")
    assert reg.get("mygreedy").__name__ == "MyGreedy"


def test_broken_plugins_are_reported_and_skipped(fresh, caplog: pytest.LogCaptureFixture) -> None:
    root, reg = fresh
    fake_dist(root, "broken-import", {"seq2seq_lightning.strategies": {"boom": "boom_mod:Boom"}},
              {"boom_mod": "raise RuntimeError('plugin exploded')\n"})
    fake_dist(root, "wrong-base", {"seq2seq_lightning.strategies": {"notastrategy": "plain_mod:Plain"}},
              {"plain_mod": "class Plain:\n    pass\n"})
    fake_dist(root, "good-plugin", {"seq2seq_lightning.strategies": {"mygreedy": "good_mod:MyGreedy"}},
              {"good_mod": GOOD})
    names = reg.names()
    assert "mygreedy" in names and "beam" in names
    assert "boom" not in names and "notastrategy" not in names
    failures = {f.name: f for f in reg.failures}
    assert failures["boom"].dist == "broken-import"
    assert "plugin exploded" in failures["boom"].error
    assert failures["notastrategy"].dist == "wrong-base"
    assert "not a subclass of seq2seq_lightning.search.base.SearchStrategy" in failures["notastrategy"].error
    assert "boom" in caplog.text and "broken-import" in caplog.text


def test_name_claimed_twice_names_both_distributions(fresh) -> None:
    root, reg = fresh
    fake_dist(root / "a", "dist-one", {"seq2seq_lightning.strategies": {"twin": "twin_a:MyGreedy"}},
              {"twin_a": GOOD})
    fake_dist(root / "b", "dist-two", {"seq2seq_lightning.strategies": {"twin": "twin_b:MyGreedy"}},
              {"twin_b": GOOD})
    import sys

    sys.path[:0] = [str(root / "a"), str(root / "b")]
    try:
        with pytest.raises(RegistryError) as err:
            reg.get("twin")
        assert "dist-one" in str(err.value) and "dist-two" in str(err.value)
        assert "greedy" in reg.names()  # the rest keep working
        assert any(f.name == "twin" and "dist-one" in f.error for f in reg.failures)
    finally:
        sys.path.remove(str(root / "a"))
        sys.path.remove(str(root / "b"))


def test_autoload_can_be_disabled(fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    root, reg = fresh
    fake_dist(root, "good-plugin", {"seq2seq_lightning.strategies": {"mygreedy": "good_mod:MyGreedy"}},
              {"good_mod": GOOD})
    monkeypatch.setenv("SEQ2SEQ_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "mygreedy" not in reg.names() and "beam" in reg.names()
    reg.reload()
    monkeypatch.setenv("SEQ2SEQ_PLUGINS", "good-plugin")
    assert "mygreedy" in reg.names()


def test_resolve_name_for_type_hints() -> None:
    from seq2seq_lightning.encoders.base import Encoder

    assert resolve_name(SearchStrategy, "beam") == "seq2seq_lightning.search.beam.BeamSearch"
    assert resolve_name(Encoder, "rnn") == "seq2seq_lightning.encoders.rnn.RNNEncoder"
    assert resolve_name(Encoder, "beam") is None  # a strategy name is no encoder
    assert resolve_name(SearchStrategy, "a.full.Path") is None
