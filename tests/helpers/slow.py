"""A callback that slows training down, so a test can kill a run in the middle."""

from __future__ import annotations

import time

from lightning.pytorch import Callback


class SlowDown(Callback):
    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


class SaveFinal(Callback):
    """Saves ``final.ckpt`` in the checkpoint folder when training ends."""

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(f"{trainer.default_root_dir}/checkpoints/final.ckpt")
