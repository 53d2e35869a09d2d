"""Weak labeling: labeling functions vote (or abstain) over the store, each is judged on
the gold holdout, a label model weighs the rest by their estimated reliability, and the
result is written as `label_model` events with provenance.

The modules: `functions` (the labeling-function API and the built-in families),
`applier` (applying them over the store in parallel shards), `label_model` (Dawid-Skene
and majority vote), `analysis` (per-function statistics on gold, combining the votes),
`events` (writing and withdrawing `label_model` events) and `run` (the stage).

This package offers the labeling-function API, for your own functions:
`from tasks.weak_labeling import LFBatch, labeling_function`. It imports no Prefect
and no MLflow, so the shard workers that import your functions start quickly.
"""

from tasks.weak_labeling.functions import (
    LabelingFunction,
    LabelingFunctionError,
    LFBatch,
    labeling_function,
)
from tasks.weak_labeling.label_model import ABSTAIN

__all__ = ["ABSTAIN", "LFBatch", "LabelingFunction", "LabelingFunctionError", "labeling_function"]
