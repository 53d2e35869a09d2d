"""The semilabel store: append-only, hive-partitioned Parquet datasets with provenance.

`datasets` holds the files and their schemas, `labels` the label event log (event ids,
each source's latest word), `resolution` each example's label from it (on Arrow
columns), `weak_labels` the weak labels in force (what a label-model run replaces and
withdraws), `export` the labels training reads (written to a file by `semilabel labels
export`), `holdout` the gold holdout and its dev/test parts, and `locks` the leases
writers take so that concurrent runs never write the same thing twice.
"""

from tasks.store.datasets import (
    ANNOTATION_REQUESTS,
    DATASETS,
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SCHEMAS,
    SLIS,
    SLIS_LATEST,
    SNAPSHOTS,
    SOURCE_KINDS,
    TMP_PREFIX,
    Store,
    StoreCounts,
    StoreError,
    content_id,
    utcnow,
)
from tasks.store.holdout import DEV, TEST, GoldSplit, gold_mask
from tasks.store.labels import (
    CONFIDENCE_TOLERANCE,
    SourceEvent,
    SourceLog,
    label_event_id,
    model_influenced,
    same_confidence,
)
from tasks.store.locks import StoreLock, StoreLockLost, StoreLockTimeout
from tasks.store.resolution import (
    RESOLVED_SCHEMA,
    LatestLabels,
    human_labels,
    resolve_labels,
)
from tasks.store.weak_labels import LabelModelLog, WeakEvent

__all__ = [
    "ANNOTATION_REQUESTS",
    "CONFIDENCE_TOLERANCE",
    "DATASETS",
    "DEV",
    "EXAMPLES",
    "LABELS",
    "QUARANTINE",
    "RESOLVED_SCHEMA",
    "SCHEMAS",
    "SLIS",
    "SLIS_LATEST",
    "SNAPSHOTS",
    "SOURCE_KINDS",
    "TEST",
    "TMP_PREFIX",
    "GoldSplit",
    "LabelModelLog",
    "LatestLabels",
    "SourceEvent",
    "SourceLog",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreLock",
    "StoreLockLost",
    "StoreLockTimeout",
    "WeakEvent",
    "content_id",
    "gold_mask",
    "human_labels",
    "label_event_id",
    "model_influenced",
    "resolve_labels",
    "same_confidence",
    "utcnow",
]
