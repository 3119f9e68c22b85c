"""CIDEr-D against values computed by hand from the definition on tiny corpora."""

from __future__ import annotations

import math

import pytest
import torch

from seq2seq_lightning.metrics.cider import CIDErD, cider_d, cider_d_scores, ngram_counts

PENALTY_1 = math.exp(-1 / 72)  # Gaussian length penalty for a length difference of 1, sigma = 6


def test_ngram_counts() -> None:
    counts = ngram_counts("a b a b")
    assert counts[("a",)] == 2 and counts[("a", "b")] == 2 and counts[("b", "a")] == 1
    assert counts[("a", "b", "a", "b")] == 1 and len(counts) == 2 + 2 + 2 + 1


def test_two_images_hand_computed() -> None:
    # N = 2 images; every reference n-gram occurs in one image's references, so every idf is ln 2
    # (an n-gram no reference has also gets df = max(1, 0) = 1). Equal idf cancels in the cosines.
    candidates = ["a b", "d"]
    references = [["a b", "a c"], ["d e"]]
    # image 1: vs "a b": unigram cosine 1, bigram cosine 1 -> 2; vs "a c": unigrams {a,b}.{a,c} = 1/2,
    # bigrams 0 -> 0.5. Sum 2.5 over 4 orders and 2 references, times 10.
    image1 = (2 + 0.5) / 4 / 2 * 10
    # image 2: "d" vs "d e": unigram cosine 1/sqrt(2), no bigrams; lengths 1 vs 2.
    image2 = (1 / math.sqrt(2)) * PENALTY_1 / 4 / 1 * 10
    scores = cider_d_scores(candidates, references)
    assert scores == pytest.approx([image1, image2])
    assert cider_d(candidates, references) == pytest.approx((image1 + image2) / 2)


def test_idf_and_clipping_hand_computed() -> None:
    # "a" is in every image's references: idf = ln 3 - ln 3 = 0, so it carries no weight.
    candidates = ["a x x", "a y", "a"]
    references = [["a x"], ["a y"], ["a z"]]
    # image 1: unigrams cand {a: 0, x: 2 ln3}, ref {a: 0, x: ln3}: clipped dot min(2,1) ln3 * ln3 over
    # norms 2 ln3 * ln3 -> 1/2 (1 without clipping). Bigrams cand {(a x), (x x)} vs ref {(a x)}:
    # 1/sqrt(2). Trigrams: the reference has none -> 0. Lengths 3 vs 2.
    image1 = (0.5 + 1 / math.sqrt(2)) * PENALTY_1 / 4 * 10
    image2 = (1 + 1) / 4 * 10  # identical to its reference: cosine 1 for unigrams and bigrams
    image3 = 0.0  # only "a", whose weight is 0: zero vector
    assert cider_d_scores(candidates, references) == pytest.approx([image1, image2, image3])
    assert cider_d(candidates, references) == pytest.approx((image1 + image2 + image3) / 3)


def test_perfect_candidates_score_ten_per_order_present() -> None:
    refs = [["one two three four"], ["five six seven eight"]]
    assert cider_d(["one two three four", "five six seven eight"], refs) == pytest.approx(10.0)


def test_metric_accumulates_batches_and_resets() -> None:
    candidates = ["a x x", "a y", "a"]
    references = [["a x"], ["a y"], ["a z"]]
    metric = CIDErD()
    metric.update(candidates[:2], references[:2])
    metric.update(candidates[2:], references[2:])
    assert float(metric.compute()) == pytest.approx(cider_d(candidates, references), rel=1e-6)
    metric.reset()
    metric.update(["a b"], [["a b", "a c"]])
    assert isinstance(metric.compute(), torch.Tensor)
    assert float(metric.compute()) == pytest.approx(cider_d(["a b"], [["a b", "a c"]]), rel=1e-6)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="candidates"):
        cider_d(["a"], [])
