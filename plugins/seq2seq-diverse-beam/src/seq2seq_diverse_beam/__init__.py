"""Diverse beam search for seq2seq-lightning (registered as ``diverse_beam``)."""

from seq2seq_diverse_beam.diverse_beam import DiverseBeamSearch

__all__ = ["DiverseBeamSearch"]
