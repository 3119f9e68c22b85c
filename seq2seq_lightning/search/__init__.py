"""Search strategies (greedy, beam, sampling) over a step-wise decoder, and their public building blocks.

The blocks for plugin strategies: the small pure decoding functions of
:mod:`seq2seq_lightning.search.functional` (also importable from here) and :class:`NBestPool`, the n
best finished hypotheses per row; see ``docs/search-blocks.md``.
"""

from seq2seq_lightning.search import functional
from seq2seq_lightning.search.base import Hypothesis, SearchStrategy, StepDecoder
from seq2seq_lightning.search.functional import (
    NEG_INF,
    beam_candidates,
    best_reachable_score,
    check_max_len,
    forbid_token,
    infer_device,
    inverse_cdf_sample,
    last_attention,
    length_normalize,
    mask_tokens,
    pick_beams,
    repeated_ngram_mask,
    row_limits,
    seeded_uniform,
    top_k_filter,
    top_p_filter,
)
from seq2seq_lightning.search.pool import NBestPool

__all__ = [
    "NEG_INF", "Hypothesis", "NBestPool", "SearchStrategy", "StepDecoder", "beam_candidates",
    "best_reachable_score", "check_max_len", "forbid_token", "functional", "infer_device",
    "inverse_cdf_sample", "last_attention", "length_normalize", "mask_tokens", "pick_beams",
    "repeated_ngram_mask", "row_limits", "seeded_uniform", "top_k_filter", "top_p_filter",
]
