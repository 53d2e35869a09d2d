"""The semilabel store: append-only, hive-partitioned Parquet datasets with provenance.

`datasets` holds the files and their schemas, `labels` the label event log (event ids,
label resolution), `holdout` the gold holdout and its dev/test parts, and `locks` the
leases writers take so that concurrent runs never write the same thing twice.
"""

from tasks.store.datasets import (
    ANNOTATION_REQUESTS,
    DATASETS,
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SCHEMAS,
    SLIS,
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
    RESOLVED_SCHEMA,
    LatestLabels,
    SourceEvent,
    SourceLog,
    human_labels,
    label_event_id,
    model_influenced,
    resolve_labels,
)
from tasks.store.locks import StoreLock, StoreLockLost, StoreLockTimeout

__all__ = [
    "ANNOTATION_REQUESTS",
    "DATASETS",
    "DEV",
    "EXAMPLES",
    "LABELS",
    "QUARANTINE",
    "RESOLVED_SCHEMA",
    "SCHEMAS",
    "SLIS",
    "SNAPSHOTS",
    "SOURCE_KINDS",
    "TEST",
    "TMP_PREFIX",
    "GoldSplit",
    "LatestLabels",
    "SourceEvent",
    "SourceLog",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreLock",
    "StoreLockLost",
    "StoreLockTimeout",
    "content_id",
    "gold_mask",
    "human_labels",
    "label_event_id",
    "model_influenced",
    "resolve_labels",
    "utcnow",
]
