"""Weak-supervision math over a label matrix: majority vote, a Dawid–Skene label model,
per-function statistics, and synthetic matrix generators for tests and benchmarks.

A label matrix `L` is int, shape (n_rows, n_functions), with values in {ABSTAIN, 0..k-1}.
Pure numpy (plus scipy's assignment solver); no torch, no Prefect, no pandas.

`votes` holds the matrix contract and the vote-level statistics (majority vote,
`lf_summary`, the generator); `dawid_skene` the label model. Import from here:
`from tasks.weak_labeling.label_model import DawidSkene, majority_vote`.
"""

from tasks.weak_labeling.label_model.dawid_skene import DawidSkene
from tasks.weak_labeling.label_model.votes import (
    ABSTAIN,
    CHUNK_ROWS,
    LabelMatrixError,
    label_dtype,
    lf_summary,
    majority_vote,
    one_rule_per_class_matrix,
    synthetic_label_matrix,
)

__all__ = [
    "ABSTAIN",
    "CHUNK_ROWS",
    "DawidSkene",
    "LabelMatrixError",
    "label_dtype",
    "lf_summary",
    "majority_vote",
    "one_rule_per_class_matrix",
    "synthetic_label_matrix",
]
