"""A classical baseline note representation: TF-IDF over the same per-admission text.

The vocabulary and IDF weights are fitted on the **training split only**; validation and test
admissions are only transformed. Missing admissions (no note, no lab text) get an all-zero row and
``missing = True``, exactly like the language-model embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfuse.data.cohort import Cohort
from medfuse.notes.text import DEFAULT_TEMPLATE, build_texts


class TfidfNotes:
    """scikit-learn ``TfidfVectorizer`` with clinical-text defaults (word 1-2 grams, sublinear tf, L2 rows)."""

    def __init__(self, max_features: int = 50_000, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2,
                 max_df: float = 0.95, sublinear_tf: bool = True, **kwargs: Any):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(max_features=max_features, ngram_range=ngram_range, min_df=min_df,
                                          max_df=max_df, sublinear_tf=sublinear_tf, dtype=np.float32,
                                          strip_accents="unicode", lowercase=True, **kwargs)

    def fit(self, texts: list[str]) -> TfidfNotes:
        self.vectorizer.fit(texts)
        return self

    def transform(self, texts: list[str]):
        """Sparse CSR matrix ``[N, vocabulary]`` (float32)."""
        return self.vectorizer.transform(texts)

    def fit_transform(self, texts: list[str]):
        return self.fit(texts).transform(texts)

    @property
    def vocabulary(self) -> list[str]:
        return list(self.vectorizer.get_feature_names_out())


def tfidf_cohort(cohort: str | Path | Cohort, template: str = DEFAULT_TEMPLATE, **kwargs: Any):
    """``(hadm_ids, X sparse [N, V], missing [N], model)`` for every admission, fitted on train texts only."""
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    nt = build_texts(cohort, template)
    train = np.flatnonzero((nt.split == "train") & nt.has_text)
    if not len(train):
        raise ValueError("no training admission has a note or lab text to fit TF-IDF on")
    if len(train) < 50:  # tiny cohorts: keep every term
        kwargs.setdefault("min_df", 1)
        kwargs.setdefault("max_df", 1.0)
    model = TfidfNotes(**kwargs).fit([nt.texts[i] for i in train])
    x = model.transform(nt.texts).tocsr().astype(np.float32)  # "" (missing) transforms to an all-zero row
    return nt.hadm_ids, x, ~nt.has_text, model
