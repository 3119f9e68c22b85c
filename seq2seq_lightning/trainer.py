"""The Trainer of the ``seq2seq`` command: Lightning's, plus :meth:`Seq2SeqTrainer.score`.

LightningCLI runs each subcommand as the Trainer method of that name, reading its arguments from the
method's signature and its help from the docstring; ``seq2seq score`` is this Trainer's ``score``.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from seq2seq_lightning.analysis.analyze import analyze, load_weights
from seq2seq_lightning.analysis.plots import markdown_table
from seq2seq_lightning.data.pairs import reading_pairs


class Seq2SeqTrainer(L.Trainer):
    """The Trainer: Lightning's, with ``score`` (forced decoding) beside fit, validate, test and predict."""

    def score(self, model: L.LightningModule | None = None, datamodule: L.LightningDataModule | None = None,
              ckpt_path: str | None = None, weights_only: bool | None = None) -> None:
        """Forced decoding: the model's log-probability of each given target, one JSON line per pair.

        A predict run over the data module's ``predict_path`` read as pairs to score (TSV or JSON
        lines; :mod:`seq2seq_lightning.data.pairs`): its batches are scored by one teacher-forced
        pass each instead of searched, and a prediction writer puts the rows in input order.

        Args:
            model: the module to score with.
            datamodule: a data module with a ``scoring`` flag (translation, captioning).
            ckpt_path: the checkpoint whose weights score (its architecture and tokenizers are read
                by the command line before the model is built).
            weights_only: as for ``predict``; checkpoints of this project load with ``True``.
        """
        with reading_pairs(datamodule):
            self.predict(model, datamodule=datamodule, return_predictions=False, ckpt_path=ckpt_path,
                         weights_only=weights_only)

    def analyze(self, model: L.LightningModule | None = None, datamodule: L.LightningDataModule | None = None,
                ckpt_path: str | None = None, **options: Any) -> list[dict[str, Any]]:
        """Search-error analysis on the test split: greedy, beam and exact search against the reference.

        Loads the weights of ``ckpt_path``, runs :func:`seq2seq_lightning.analysis.analyze.analyze` (its
        docstring defines the columns and the verdicts; ``options`` are its arguments) on this Trainer's
        device, without a Trainer loop, and prints the summary as a markdown table.

        Args:
            model: the module to analyse.
            datamodule: the data module whose test split is searched.
            ckpt_path: the checkpoint whose weights are analysed (its architecture and tokenizers are read
                by the command line before the model is built); None analyses the model as it is.
        """
        if ckpt_path is not None:
            load_weights(model, datamodule, ckpt_path)
        rows = analyze(model, datamodule, trainer=self, **options)
        print(markdown_table(rows), end="")
        return rows
