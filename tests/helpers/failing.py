"""A callback that makes one process of a distributed predict fail, for the tests of what the others do."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from lightning.pytorch import Callback


class FailOnRank(Callback):
    """On global rank ``rank``, after ``after`` predict batches: ``raise`` an error, ``hang`` (sleep for an
    hour), or ``exit`` the process at once (as a crash or the OOM killer would: no clean-up, no report).

    With ``record``, every process writes the number of predict batches it finished to
    ``record/rank{r}.batches`` when predict ends or fails.
    """

    def __init__(self, rank: int = 1, after: int = 1, mode: Literal["raise", "hang", "exit"] = "raise",
                 record: str | None = None) -> None:
        self.rank, self.after, self.mode, self.record = rank, after, mode, record
        self.batches = 0

    def on_predict_batch_end(self, trainer, *args, **kwargs) -> None:
        self.batches += 1
        if trainer.global_rank != self.rank or self.batches < self.after:
            return
        if self.mode == "raise":
            raise RuntimeError(f"a plugin callback failed on rank {self.rank}")
        if self.mode == "hang":
            time.sleep(3600)
        os._exit(3)

    def _write(self, trainer) -> None:
        if self.record:
            Path(self.record, f"rank{trainer.global_rank}.batches").write_text(str(self.batches))

    def on_predict_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._write(trainer)
