"""Contamination check: no evaluation item may appear (near-)verbatim in training data.

An evaluation text is *contaminated* by a training document when most of its character
5-grams (after NFKC, without spaces and punctuation) occur in that one document. Containment
of the evaluation text, not Jaccard, because a short question copied into a long answer is
still a leak.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Contamination", "find_contamination", "normalize_for_overlap"]

_DROP = re.compile(r"[\s\W_]+", re.UNICODE)
N = 5


def normalize_for_overlap(text: str) -> str:
    return _DROP.sub("", unicodedata.normalize("NFKC", text).lower())


def _grams(text: str) -> set[str]:
    return {text[i : i + N] for i in range(len(text) - N + 1)}


@dataclass(frozen=True)
class Contamination:
    eval_id: str
    train_id: str
    containment: float  # share of the eval text's 5-grams found in the training document
    eval_text: str


def find_contamination(
    eval_texts: Iterable[tuple[str, str]],
    train_texts: Iterable[tuple[str, str]],
    *,
    threshold: float = 0.5,
    min_chars: int = 12,
) -> list[Contamination]:
    """Pairs (eval id, train id) where containment ≥ ``threshold`` (texts ≥ ``min_chars``)."""
    index: dict[str, set[int]] = defaultdict(set)
    train = list(train_texts)
    for k, (_, text) in enumerate(train):
        for g in _grams(normalize_for_overlap(text)):
            index[g].add(k)
    hits: list[Contamination] = []
    for eval_id, text in eval_texts:
        norm = normalize_for_overlap(text)
        if len(norm) < min_chars:
            continue
        grams = _grams(norm)
        counts: dict[int, int] = defaultdict(int)
        for g in grams:
            for k in index.get(g, ()):
                counts[k] += 1
        if not counts:
            continue
        k, best = max(counts.items(), key=lambda kv: kv[1])
        score = best / len(grams)
        if score >= threshold:
            hits.append(Contamination(eval_id, train[k][0], round(score, 3), text))
    return hits
