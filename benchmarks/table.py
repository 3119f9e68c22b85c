"""Render benchmark JSON lines as the markdown table of benchmarks/README.md.

    python benchmarks/table.py results/*.jsonl

Each row shows the figure (and its design, where the script has several), its value and unit (ratios
to three decimals), the goal and whether the value meets it.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
from pathlib import Path

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def verdict(value: float, goal: str) -> str:
    match = re.fullmatch(r"\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", goal or "")
    if not match:
        return ""
    return "met" if _OPS[match.group(1)](value, float(match.group(2))) else "**not met**"


def fmt(value: float, unit: str = "") -> str:
    if unit == "ratio" and abs(value) < 10:
        return f"{value:.3f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    print("| benchmark | figure | value | unit | goal | |")
    print("| --- | --- | ---: | --- | --- | --- |")
    for path in args.files:
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            goal = row.get("goal", "")
            figure = f"{row['figure']} ({row['design']} design)" if "design" in row else row["figure"]
            print(f"| {row['benchmark']} | {figure} | {fmt(row['value'], row['unit'])} | {row['unit']} | {goal} | "
                  f"{verdict(row['value'], goal)} |")


if __name__ == "__main__":
    main()
