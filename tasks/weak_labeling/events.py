"""Writing the label model's labels: `label_model` events with their confidence and
provenance, a new event only where this label model's word on an example changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from configs.schema import Config
from tasks.lf_applier import ExampleIds
from tasks.store import LABELS, SCHEMAS, SourceEvent, SourceLog, Store, utcnow


def write_label_model_events(
    store: Store,
    cfg: Config,
    source_name: str,
    run_id: str,
    example_ids: Sequence[str],
    labels: np.ndarray,
    conf: np.ndarray,
    influenced: np.ndarray,
) -> tuple[int, int]:
    """`label_model` events saying class `labels[i]` at `conf[i]` about `example_ids[i]`:
    a new event only where the label or its confidence changed since this label model's
    last word on the example (a re-run on the same data writes nothing). Committed under
    the store's lease, after catching up with other writers. Returns (written, already
    present)."""
    ids = example_ids if isinstance(example_ids, ExampleIds) else ExampleIds(example_ids)
    classes = list(cfg.taxonomy.classes)
    source = SourceLog("label_model", source_name)
    read = store.files(LABELS)
    source.add_files(store, read)  # the bulk of the log, read before taking the lease
    # Only an example listed twice can meet its own new event again below: the log
    # records the events of those alone, rather than one entry per event written.
    repeated = ids.repeated()
    with store.commit_lock() as lease:
        source.add_files(store, sorted(set(store.files(LABELS)) - set(read)))  # catch up
        lease.check()
        now = utcnow()
        event_ids: list[pa.Array] = []
        new = np.zeros(len(ids), bool)
        for start, chunk in ids.chunks():
            fresh: list[str] = []
            for i, ex in enumerate(chunk, start):
                label, c = classes[int(labels[i])], float(conf[i])
                event_id = source.next_event(ex, label, c)
                if event_id is None or event_id in source.event_ids:
                    continue
                if ex in repeated:
                    source.record(ex, SourceEvent(event_id, label, c), (now, event_id))
                fresh.append(event_id)
                new[i] = True
            event_ids.append(pa.array(fresh, pa.string()))
        rows = np.flatnonzero(new)
        store.write(
            LABELS,
            _label_events(
                pa.chunked_array(event_ids, pa.string()),
                ids.take(rows).arrow,
                pa.array(classes, pa.string()).take(pa.array(labels[rows], pa.int64())),
                conf[rows],
                influenced[rows],
                source_name=source_name,
                run_id=run_id,
                taxonomy_version=cfg.taxonomy.version,
                created_at=now,
            ),
            when=now,
        )
    return len(rows), len(ids) - len(rows)


def _label_events(
    event_ids: pa.ChunkedArray,
    example_ids: pa.ChunkedArray,
    labels: pa.Array,
    conf: np.ndarray,
    influenced: np.ndarray,
    *,
    source_name: str,
    run_id: str,
    taxonomy_version: str,
    created_at: datetime,
) -> pa.Table:
    """The label-log table of `label_model` events, built column by column."""
    schema = SCHEMAS[LABELS]
    n = len(event_ids)

    def same(name: str, value: object) -> pa.Array:
        return pa.repeat(pa.scalar(value, schema.field(name).type), n)

    columns = {
        "event_id": event_ids,
        "example_id": example_ids,
        "label": labels,
        "source_kind": same("source_kind", "label_model"),
        "source_name": same("source_name", source_name),
        "confidence": pa.array(conf, pa.float64()).cast(schema.field("confidence").type),
        "created_at": same("created_at", created_at),
        "run_id": same("run_id", run_id),
        "taxonomy_version": same("taxonomy_version", taxonomy_version),
        "model_influenced": pa.array(influenced, pa.bool_()),
    }
    return pa.table([columns[f.name] for f in schema], schema=schema)
