"""Writing the label model's labels: `label_model` events with their confidence and
provenance. The run becomes the whole truth of weak labels (`tasks.store.weak_labels`):
a new event where its word on an example differs from the weak label in force, and a
withdrawal where an example has a weak label and the run gives none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from configs.schema import Config
from tasks.store import LABELS, SCHEMAS, LabelModelLog, Store, WeakEvent, utcnow
from tasks.weak_labeling.applier import ExampleIds


@dataclass(frozen=True)
class LabelModelWrite:
    written: int  # events written: new weak labels and withdrawals
    unchanged: int  # labels of this run already in force as it says them
    withdrawn: int  # weak labels withdrawn: examples this run gives no label


def write_label_model_events(
    store: Store,
    cfg: Config,
    source_name: str,
    run_id: str,
    example_ids: Sequence[str],
    labels: np.ndarray,
    conf: np.ndarray,
    influenced: np.ndarray,
) -> LabelModelWrite:
    """Make this run's word the weak labels in force: class `labels[i]` at `conf[i]` for
    `example_ids[i]`, and no weak label for any other example. Writes an event only where
    the label, its confidence, its source or its model influence changed, and a
    withdrawal for every other example that has a weak label, so a re-run on the same
    data writes nothing. Committed under the store's lease, after catching up with other
    writers."""
    ids = example_ids if isinstance(example_ids, ExampleIds) else ExampleIds(example_ids)
    classes = list(cfg.taxonomy.classes)
    weak = LabelModelLog()
    read = store.files(LABELS)
    weak.add_files(store, read)  # the bulk of the log, read before taking the lease
    # Only an example listed twice can meet its own new event again below: the log
    # records the events of those alone, rather than one entry per event written.
    repeated = ids.repeated()
    with store.commit_lock() as lease:
        weak.add_files(store, sorted(set(store.files(LABELS)) - set(read)))  # catch up
        lease.check()
        now = utcnow()
        event_ids: list[pa.Array] = []
        new = np.zeros(len(ids), bool)
        for start, chunk in ids.chunks():
            fresh: list[str] = []
            for i, ex in enumerate(chunk, start):
                label, c, infl = classes[int(labels[i])], float(conf[i]), bool(influenced[i])
                event_id = weak.next_event(ex, label, c, source_name=source_name, influenced=infl)
                if event_id is None or event_id in weak.event_ids:
                    continue
                if ex in repeated:
                    weak.record(
                        ex, WeakEvent(event_id, label, c, source_name, infl), (now, event_id)
                    )
                fresh.append(event_id)
                new[i] = True
            event_ids.append(pa.array(fresh, pa.string()))
        gone, gone_events = weak.withdrawals(ids.arrow, source_name=source_name)
        rows = np.flatnonzero(new)
        events = pa.concat_tables(
            [
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
                _label_events(  # withdrawals: no label, confidence 0
                    pa.chunked_array([pa.array(gone_events, pa.string())]),
                    pa.chunked_array([pa.array(gone, pa.string())]),
                    pa.nulls(len(gone), pa.string()),
                    np.zeros(len(gone)),
                    np.zeros(len(gone), bool),
                    source_name=source_name,
                    run_id=run_id,
                    taxonomy_version=cfg.taxonomy.version,
                    created_at=now,
                ),
            ]
        )
        store.write(LABELS, events, when=now)
    return LabelModelWrite(
        written=events.num_rows, unchanged=len(ids) - len(rows), withdrawn=len(gone)
    )


def _label_events(
    event_ids: pa.ChunkedArray,
    example_ids: pa.ChunkedArray,
    labels: pa.Array,  # null: a withdrawal
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
