"""Fixtures shared by the serving tests: one tiny dates checkpoint for the whole package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import last_ckpt


@pytest.fixture(scope="package")
def dates_ckpt(tiny_dates_run: Path) -> Path:
    """The checkpoint of the session's tiny dates fit (``fit -c dates.yaml`` with TINY, tests/conftest.py)."""
    return last_ckpt(tiny_dates_run)
