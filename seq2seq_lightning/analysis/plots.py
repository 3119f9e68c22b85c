"""What the search-error analysis writes and shows: its files, ``beam_sizes.png``, the markdown table,
W&B, the progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer

from seq2seq_lightning.callbacks.tracking import log_images, wandb_loggers

#: columns of ``summary.md``, in order
COLUMNS = ("search", "beam_size", "bleu", "mean_log_prob", "length_ratio", "reference_better", "search_errors",
           "empty", "exact_optimal", "expansions", "seconds")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a markdown table (``-`` where a value does not apply), with the length
    penalty and sentence count under it."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    if rows:
        lines += ["", f"{rows[0]['sentences']} sentences, length_penalty {rows[0]['length_penalty']}"]
    return "\n".join(lines) + "\n"


def plot_beam_sizes(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """BLEU, search errors (and the reference-better share) and length ratio against beam size, on a
    log-2 axis; exact search as a dashed horizontal line. Saves a PNG at ``path`` and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    beams = [r for r in rows if r["beam_size"] is not None]
    exact = next((r for r in rows if r["search"] == "exact"), None)
    sizes = [r["beam_size"] for r in beams]
    panels = [("bleu", "BLEU"), ("search_errors", "share of sentences"), ("length_ratio", "output / reference tokens")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, ylabel) in zip(axes, panels):
        series = [(key, "o-", "C0")] if key != "search_errors" else \
            [("search_errors", "o-", "C3"), ("reference_better", "s--", "C1")]
        for name, style, colour in series:
            values = [r[name] for r in beams]
            if any(v is not None for v in values):
                ax.plot(sizes, [float("nan") if v is None else v for v in values], style, color=colour,
                        label=name.replace("_", " "))
            if exact is not None and exact.get(name) is not None and name != "search_errors":  # 0 by definition
                ax.axhline(exact[name], color=colour, linestyle=":", label=f"exact: {name.replace('_', ' ')}")
        if key == "search_errors":
            ax.set_ylim(-0.02, max([0.1] + [r[n] or 0.0 for r in rows for n in ("search_errors", "reference_better")])
                        * 1.1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("beam size (1 = greedy)")
        ax.set_ylabel(ylabel)
        ax.set_title({"bleu": "BLEU", "search_errors": "search errors",
                      "length_ratio": "length ratio"}[key])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if rows:
        fig.suptitle(f"{rows[0]['sentences']} sentences, length_penalty {rows[0]['length_penalty']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_to_wandb(trainer: Trainer, rows: list[dict[str, Any]], picture: Path) -> None:
    """The picture (``analysis/beam_sizes``) and the summary table (``analysis/summary``) to every W&B
    logger of the trainer; the runs are finished afterwards so their files are complete."""
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    import wandb
    from PIL import Image

    with Image.open(picture) as image:
        caption = "BLEU, search errors and length ratio against beam size"
        log_images(trainer, "analysis/beam_sizes", [image.convert("RGB")], [caption])
    columns = list(rows[0]) if rows else []
    for logger in loggers:
        logger.experiment.log({"analysis/summary": wandb.Table(columns=columns,
                                                               data=[[row[c] for c in columns] for row in rows])})
        logger.experiment.finish()


def write_outputs(folder: Path, rows: list[dict[str, Any]], records: list[dict[str, Any]],
                  trainer: Trainer | None) -> None:
    """summary.jsonl, summary.md, sentences.jsonl and beam_sizes.png in ``folder``; W&B when configured."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "summary.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    (folder / "summary.md").write_text(markdown_table(rows), encoding="utf-8")
    with open(folder / "sentences.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    picture = plot_beam_sizes(rows, folder / "beam_sizes.png")
    if trainer is not None:
        log_to_wandb(trainer, rows, picture)


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar (a context manager) over sentence x search steps; ``enabled=False`` shows nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("sentence x search"), TimeElapsedColumn(), disable=not enabled)
