"""CIDEr-D: consensus-based image description evaluation (Vedantam et al., 2015), the "-D" variant.

For n = 1..4, every sentence becomes a vector over its n-grams: the n-gram's count in the sentence
times its inverse document frequency ``log(N) - log(max(1, df))``, where N is the number of images in
the corpus and df the number of images whose references contain the n-gram. A candidate scores, per
reference and per n, the cosine of the two vectors with the candidate's entries clipped to the
reference's (``min(c, r) * r`` summed, over ``|c| |r|``), times a Gaussian length penalty
``exp(-(len_c - len_r)^2 / (2 sigma^2))``, sigma = 6. Per image: the mean over n of the mean over
references, times 10. The corpus score is the mean over images. Sentences are lists of
whitespace-separated words (normalise them before).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

import torch
from torchmetrics import Metric

Ngrams = Counter  # n-gram tuple -> count


def ngram_counts(sentence: str, n: int = 4) -> Ngrams:
    """All 1..n-grams of the sentence's words, with their counts."""
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _vector(counts: Ngrams, df: Counter, log_n: float, n: int) -> tuple[list[dict], list[float]]:
    """tf-idf vectors per n-gram order (index k-1 holds k-grams) and their norms."""
    vec: list[dict] = [{} for _ in range(n)]
    for gram, tf in counts.items():
        vec[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
    norms = [math.sqrt(sum(v * v for v in order.values())) for order in vec]
    return vec, norms


def cider_d_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
                   sigma: float = 6.0) -> list[float]:
    """The CIDEr-D score of each candidate against its references (idf from this corpus's references)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    ref_counts = [[ngram_counts(r, n) for r in refs] for refs in references]
    df: Counter = Counter()
    for refs in ref_counts:
        df.update({gram for counts in refs for gram in counts})
    log_n = math.log(max(1, len(candidates)))
    scores = []
    for candidate, refs in zip(candidates, ref_counts):
        if not refs:
            scores.append(0.0)
            continue
        cand_vec, cand_norm = _vector(ngram_counts(candidate, n), df, log_n, n)
        cand_len = len(candidate.split())
        total = 0.0
        for counts in refs:
            ref_vec, ref_norm = _vector(counts, df, log_n, n)
            ref_len = sum(c for gram, c in counts.items() if len(gram) == 1)
            penalty = math.exp(-((cand_len - ref_len) ** 2) / (2 * sigma**2))
            for k in range(n):
                dot = sum(min(v, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, v in cand_vec[k].items())
                if cand_norm[k] != 0 and ref_norm[k] != 0:
                    dot /= cand_norm[k] * ref_norm[k]
                total += dot * penalty
        scores.append(total / n / len(refs) * 10.0)
    return scores


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean of :func:`cider_d_scores` (0 for an empty corpus)."""
    scores = cider_d_scores(candidates, references, n, sigma)
    return sum(scores) / len(scores) if scores else 0.0


class CIDErD(Metric):
    """CIDEr-D over everything seen since the last reset (idf needs the whole corpus, so the sentences are
    kept: as UTF-8 JSON bytes in a tensor state, which processes can gather)."""

    full_state_update = False

    def __init__(self, n: int = 4, sigma: float = 6.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n, self.sigma = n, sigma
        self.add_state("records", default=[], dist_reduce_fx="cat")

    def update(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        payload = "".join(json.dumps([c, list(r)]) + "\x1e" for c, r in zip(candidates, references))
        data = torch.frombuffer(bytearray(payload.encode("utf-8")), dtype=torch.uint8) if payload \
            else torch.zeros(0, dtype=torch.uint8)
        self.records.append(data.to(self.device))

    def compute(self) -> torch.Tensor:
        records = self.records if isinstance(self.records, list) else [self.records]
        data = b"".join(t.cpu().numpy().tobytes() for t in records).decode("utf-8")
        pairs = [json.loads(chunk) for chunk in data.split("\x1e") if chunk]
        value = cider_d([c for c, _ in pairs], [r for _, r in pairs], self.n, self.sigma)
        return torch.tensor(value, dtype=torch.float32)
