"""The sampling stage: choose what people should label next, in three streams with their
own budgets, and record each choice as an annotation request in the store.

- `train`: the unlabeled, non-gold pool, chosen by `sampling.strategy` (see
  `tasks.sampling.strategies`) from the champion's predictions and embeddings, or a
  teacher's trained on the current labels when there is no champion yet
  (`tasks.sampling.scoring`);
- `gold`: gold-holdout examples without a human label, uniformly at random, so the gold
  set grows without bias;
- `review`: existing labels most likely wrong, by confident learning
  (`tasks.sampling.review`), to be checked again.

`pool` finds the candidates (rows of the decoded image cache) and scores them batch by
batch, `shards` scores the train pool shard by shard on `sampling.runner`, keeping only
what the strategy needs (`candidates`), `streams` chooses from them, `requests` records
the choice; `run` runs them (`sample_for_annotation`, `sample_slice` and their Prefect
tasks) from the `SamplingInputs` a flow builds from its config (`inputs`).
"""

from tasks.sampling.inputs import SamplingInputs
from tasks.sampling.requests import STREAMS
from tasks.sampling.run import (
    SamplingResult,
    sample_drifted,
    sample_examples,
    sample_for_annotation,
    sample_slice,
)
from tasks.sampling.scoring import Scorer, scoring_model
from tasks.sampling.strategies import STRATEGIES

__all__ = [
    "STRATEGIES",
    "STREAMS",
    "SamplingInputs",
    "SamplingResult",
    "Scorer",
    "sample_drifted",
    "sample_examples",
    "sample_for_annotation",
    "sample_slice",
    "scoring_model",
]
