"""Contamination and near-duplicate checks on character 5-grams.

An evaluation text is *contaminated* by a training document when most of its character
5-grams (after NFKC, without spaces and punctuation) occur in that one document. Containment
of the evaluation text, not Jaccard, because a short question copied into a long answer is
still a leak.

Two evaluation items are *near-duplicates* when either one's 5-grams are mostly contained in
the other's (:func:`find_near_duplicates`): the same question asked twice adds an item to the
count without adding information, and makes the gate's paired items less independent than its
statistics assume.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Contamination",
    "NearDuplicateIndex",
    "find_contamination",
    "find_near_duplicates",
    "normalize_for_overlap",
]

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


class NearDuplicateIndex:
    """Texts indexed by 5-gram, asked: is a new text a near-duplicate of any of them?"""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._grams: list[set[str]] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        grams = _grams(normalize_for_overlap(text))
        k = len(self._grams)
        self._grams.append(grams)
        for g in grams:
            self._index[g].append(k)

    def nearest(self, text: str) -> tuple[int, float] | None:
        """(index, containment) of the most similar indexed text: the larger of the shares of
        either text's 5-grams found in the other. None when nothing shares a 5-gram."""
        grams = _grams(normalize_for_overlap(text))
        if not grams:
            return None
        shared: dict[int, int] = defaultdict(int)
        for g in grams:
            for k in self._index.get(g, ()):
                shared[k] += 1
        if not shared:
            return None
        return max(
            ((k, s / min(len(grams), len(self._grams[k]))) for k, s in shared.items()),
            key=lambda kv: kv[1],
        )

    def near(self, text: str, threshold: float) -> bool:
        best = self.nearest(text)
        return best is not None and best[1] >= threshold


def find_near_duplicates(
    texts: Iterable[tuple[str, str]], *, threshold: float
) -> list[tuple[str, str, float]]:
    """(id, earlier id, containment) for every text that is a near-duplicate of an earlier one."""
    index = NearDuplicateIndex()
    ids: list[str] = []
    hits = []
    for text_id, text in texts:
        best = index.nearest(text)
        if best is not None and best[1] >= threshold:
            hits.append((text_id, ids[best[0]], round(best[1], 3)))
        index.add(text)
        ids.append(text_id)
    return hits
