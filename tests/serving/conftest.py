"""Fixtures shared by the serving tests: one tiny dates checkpoint for the whole package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import CONFIG, TINY, last_ckpt, seq2seq


@pytest.fixture(scope="package")
def dates_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("serve-dates")
    seq2seq("fit", "-c", str(CONFIG), *TINY, "--trainer.logger=false", f"--trainer.default_root_dir={run}")
    return last_ckpt(run)
