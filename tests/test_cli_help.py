"""`seq2seq --help` lists every subcommand, those with parsers of their own included."""

from __future__ import annotations

import pytest

SUBCOMMANDS = ["fit", "validate", "test", "predict", "score", "analyze", "serve", "export", "average", "plugins"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_every_subcommand(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from seq2seq_lightning.cli import OTHER_SUBCOMMANDS, main

    with pytest.raises(SystemExit) as exit_help:
        main([flag])
    assert exit_help.value.code == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.strip()}
    assert set(SUBCOMMANDS) <= listed, out  # each on a line of its own, with its short description
    for name, text in OTHER_SUBCOMMANDS.items():
        assert f"{name}  " in out and text in out, name
    assert "serve, export, average: add --help" in out
