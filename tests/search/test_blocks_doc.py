"""The example of docs/search-blocks.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "search-blocks.md"


def test_the_guide_example_runs():
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    namespace: dict = {"__name__": "search_blocks_example"}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102  (our own doc; its asserts check the outputs)
    assert namespace["fresh"].tokens == [2, 3, 4]
    assert namespace["plain"].tokens == [2, 3, 2, 3, 2, 3]
