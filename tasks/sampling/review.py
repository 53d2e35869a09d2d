"""The review stream: existing labels most likely to be wrong, found by confident
learning (Northcutt et al., 2021) on out-of-sample predicted probabilities.

The probabilities come from a cross-validated logistic regression on the scoring
model's embeddings: each label is judged by a classifier that never saw it. cleanlab's
`find_label_issues` (the reference implementation) then flags the labels whose given
class the out-of-sample prediction contradicts beyond the per-class noise it estimates,
ranked by self-confidence (the probability given to the label: lowest first).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelIssues:
    rows: np.ndarray  # flagged rows, most likely wrong first
    scores: np.ndarray  # 1 - out-of-sample probability of the given label
    probs: np.ndarray  # (N, K) the out-of-sample probabilities


def out_of_sample_probs(
    embeddings: np.ndarray, labels: np.ndarray, k: int, folds: int, seed: int
) -> np.ndarray:
    """(N, K) class probabilities, each row from a model fitted without that row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=k)
    n_splits = max(2, min(folds, int(counts[counts > 0].min())))
    probs = np.zeros((len(labels), k))
    x = StandardScaler().fit_transform(embeddings.astype(np.float64))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class missing from a fold's training part
        for train, held in splitter.split(x, labels):
            clf = LogisticRegression(max_iter=1000, C=1.0)
            clf.fit(x[train], labels[train])
            probs[np.ix_(held, clf.classes_)] = clf.predict_proba(x[held])
    return probs


def find_label_issues(
    embeddings: np.ndarray, labels: np.ndarray, k: int, folds: int = 5, seed: int = 0
) -> LabelIssues:
    """Rows whose label is likely wrong, by confident learning (see the module)."""
    from cleanlab.filter import find_label_issues as cl_find

    if len(labels) < 2 * k or len(np.unique(labels)) < 2:
        return LabelIssues(np.zeros(0, int), np.zeros(0), np.zeros((len(labels), k)))
    probs = out_of_sample_probs(embeddings, labels, k, folds, seed)
    present = np.unique(labels)
    # cleanlab wants labels 0..K'-1 over the classes present: re-index, then map back.
    remap = {c: i for i, c in enumerate(present)}
    sub = probs[:, present]
    sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
    ranked = cl_find(
        np.array([remap[c] for c in labels]),
        sub,
        return_indices_ranked_by="self_confidence",
        n_jobs=1,  # no worker pool: forked workers inherit Prefect's signal handlers
    )
    ranked = np.asarray(ranked, dtype=int)
    scores = 1.0 - probs[ranked, labels[ranked]]
    return LabelIssues(ranked, scores, probs)
