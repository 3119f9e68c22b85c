"""Auditing search: forced-decoding scores (:mod:`.scoring`) and search-error analysis."""

from seq2seq_lightning.analysis.scoring import ForcedScore, forced_scores, score_token_ids

__all__ = ["ForcedScore", "forced_scores", "score_token_ids"]
