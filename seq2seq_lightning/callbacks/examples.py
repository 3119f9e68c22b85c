"""Example outputs of validation and test, collected by a callback (modules compute, callbacks observe).

:class:`ExampleCollector` keeps the first ``num_examples`` rows of each validation and test epoch:
source, reference, hypothesis, the attention of the best hypothesis with its token labels, and
what the task adds (``pl_module.example_extras(batch, i)``: source token labels, the image). The
module's evaluation step hands it the searched hypotheses as its step output. At the end of fit and
test it prints them as a table. :class:`~seq2seq_lightning.callbacks.tracking.SampleTable` and
:class:`~seq2seq_lightning.callbacks.heatmaps.AttentionPlots` read what it collected, and add one
to the trainer if it has none; the ``seq2seq`` CLI always adds one.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from seq2seq_lightning.callbacks.attention import to_pil

STAGES = ("val", "test")


class ExampleCollector(Callback):
    """Keeps a few example outputs of every validation and test epoch (``self.examples[stage]``).

    Args:
        num_examples: examples kept per epoch; None takes the module's ``num_examples``.
        print_table: print the examples as a table at the end of fit and of test (rank 0).
    """

    def __init__(self, num_examples: int | None = None, print_table: bool = True) -> None:
        self.num_examples = num_examples
        self.print_table = print_table
        self.examples: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}

    @staticmethod
    def of(trainer: Trainer) -> ExampleCollector:
        """The trainer's collector; one is added when it has none."""
        found = next((c for c in trainer.callbacks if isinstance(c, ExampleCollector)), None)
        if found is None:
            found = ExampleCollector(print_table=False)
            trainer.callbacks.append(found)
        return found

    # -- collecting ----------------------------------------------------------------------------
    def _limit(self, pl_module: LightningModule) -> int:
        return self.num_examples if self.num_examples is not None else int(getattr(pl_module, "num_examples", 5))

    def collect(self, stage: str, pl_module: LightningModule, outputs: Any, batch: Any) -> None:
        found = outputs.get("hypotheses") if isinstance(outputs, dict) else None
        room = self._limit(pl_module) - len(self.examples[stage])
        if found is None or room <= 0:
            return
        texts = outputs.get("outputs") or pl_module.detokenize(found)
        tok = pl_module.target_tokenizer
        for i in range(min(room, len(found))):
            example = {"source": pl_module.source_repr(batch, i), "reference": pl_module.reference_repr(batch, i),
                       "hypothesis": texts[i], "attention": None, "output_labels": []}
            if found[i]:
                best = found[i][0]
                labels = [tok.id_to_token(t) or "?" for t in best.tokens]
                if best.attention is not None:
                    example["attention"] = best.attention.detach().float().cpu()  # (steps, S)
                    labels += ["</s>"] * (best.attention.size(0) - len(labels))
                example["output_labels"] = labels
            example.update(pl_module.example_extras(batch, i))
            if isinstance(example.get("image"), Tensor):  # (3, H, W) in [0, 1]
                example["image"] = to_pil(example["image"])
            self.examples[stage].append(example)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.examples["val"] = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.examples["test"] = []

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self.collect("val", pl_module, outputs, batch)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self.collect("test", pl_module, outputs, batch)

    # -- showing -------------------------------------------------------------------------------
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.print_examples(trainer, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.print_examples(trainer, "test")

    def print_examples(self, trainer: Trainer, stage: str) -> None:
        if not self.print_table or not trainer.is_global_zero or not self.examples[stage]:
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Example outputs ({stage})", show_lines=False)
        for col in ("source", "reference", "hypothesis"):
            table.add_column(col, overflow="fold")
        for ex in self.examples[stage]:
            table.add_row(ex["source"], ex["reference"], ex["hypothesis"])
        Console().print(table)
