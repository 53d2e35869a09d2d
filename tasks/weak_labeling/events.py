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

from configs.data import TaxonomyConfig
from tasks.store import LABELS, SCHEMAS, LabelModelLog, Store, WeakEvent, utcnow
from tasks.weak_labeling.applier import ExampleIds


@dataclass(frozen=True)
class RunLabels:
    """What one label-model run says: class `labels[i]` at confidence `conf[i]` for
    `example_ids[i]`, and whether a model shaped that label (`influenced[i]`)."""

    example_ids: ExampleIds  # a sequence of str is taken too, and stored as ExampleIds
    labels: np.ndarray  # (n,) class indices
    conf: np.ndarray  # (n,) float
    influenced: np.ndarray  # (n,) bool

    def __post_init__(self) -> None:
        if not isinstance(self.example_ids, ExampleIds):
            object.__setattr__(self, "example_ids", ExampleIds(self.example_ids))


@dataclass(frozen=True)
class LabelModelWrite:
    written: int  # events written: new weak labels and withdrawals
    unchanged: int  # labels of this run already in force as it says them
    withdrawn: int  # weak labels withdrawn: examples this run gives no label


@dataclass(frozen=True)
class _Provenance:
    """What every event of one write shares."""

    source_name: str
    run_id: str
    taxonomy_version: str
    created_at: datetime


@dataclass(frozen=True)
class _NewEvents:
    event_ids: pa.ChunkedArray  # one per row below, in order
    rows: np.ndarray  # the positions in `RunLabels` whose word changed


def write_label_model_events(
    store: Store, taxonomy: TaxonomyConfig, source_name: str, run_id: str, said: RunLabels
) -> LabelModelWrite:
    """Make this run's word (`said`) the weak labels in force, and no weak label for any
    other example. Writes an event only where the label, its confidence, its source or
    its model influence changed, and a withdrawal for every other example that has a
    weak label, so a re-run on the same data writes nothing. Committed under the store's
    lease, after catching up with other writers."""
    weak = LabelModelLog()
    read = store.files(LABELS)
    weak.add_files(store, read)  # the bulk of the log, read before taking the lease
    # Only an example listed twice can meet its own new event again below: the log
    # records the events of those alone, rather than one entry per event written.
    repeated = said.example_ids.repeated()
    with store.commit_lock() as lease:
        weak.add_files(store, sorted(set(store.files(LABELS)) - set(read)))  # catch up
        lease.check()
        prov = _Provenance(source_name, run_id, taxonomy.version, utcnow())
        new = _new_events(weak, said, taxonomy.classes, prov, repeated)
        gone, gone_events = weak.withdrawals(said.example_ids.arrow, source_name=source_name)
        events = pa.concat_tables(
            [
                _labels_table(said, new, taxonomy.classes, prov),
                _withdrawals_table(gone, gone_events, prov),
            ]
        )
        store.write(LABELS, events, when=prov.created_at)
    return LabelModelWrite(
        written=events.num_rows,
        unchanged=len(said.example_ids) - len(new.rows),
        withdrawn=len(gone),
    )


def _new_events(
    weak: LabelModelLog,
    said: RunLabels,
    classes: Sequence[str],
    prov: _Provenance,
    repeated: set[str],
) -> _NewEvents:
    """The events of the rows whose word differs from the weak label in force (recorded
    in `weak` for the `repeated` examples, which may meet them again)."""
    event_ids: list[pa.Array] = []
    new = np.zeros(len(said.example_ids), bool)
    for start, chunk in said.example_ids.chunks():
        fresh: list[str] = []
        for i, ex in enumerate(chunk, start):
            label = classes[int(said.labels[i])]
            c, infl = float(said.conf[i]), bool(said.influenced[i])
            event_id = weak.next_event(ex, label, c, source_name=prov.source_name, influenced=infl)
            if event_id is None or event_id in weak.event_ids:
                continue
            if ex in repeated:
                event = WeakEvent(event_id, label, c, prov.source_name, infl)
                weak.record(ex, event, (prov.created_at, event_id))
            fresh.append(event_id)
            new[i] = True
        event_ids.append(pa.array(fresh, pa.string()))
    return _NewEvents(pa.chunked_array(event_ids, pa.string()), np.flatnonzero(new))


def _labels_table(
    said: RunLabels, new: _NewEvents, classes: Sequence[str], prov: _Provenance
) -> pa.Table:
    """The new events of the rows `new` names, with their class names."""
    rows = new.rows
    names = pa.array(classes, pa.string()).take(pa.array(said.labels[rows], pa.int64()))
    return _label_events(
        new.event_ids,
        said.example_ids.take(rows).arrow,
        names,
        said.conf[rows],
        said.influenced[rows],
        prov,
    )


def _withdrawals_table(gone: list[str], event_ids: list[str], prov: _Provenance) -> pa.Table:
    """Withdrawals of the weak labels of `gone`: no label, confidence 0."""
    return _label_events(
        pa.chunked_array([pa.array(event_ids, pa.string())]),
        pa.chunked_array([pa.array(gone, pa.string())]),
        pa.nulls(len(gone), pa.string()),
        np.zeros(len(gone)),
        np.zeros(len(gone), bool),
        prov,
    )


def _label_events(
    event_ids: pa.ChunkedArray,
    example_ids: pa.ChunkedArray,
    labels: pa.Array,  # null: a withdrawal
    conf: np.ndarray,
    influenced: np.ndarray,
    prov: _Provenance,
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
        "source_name": same("source_name", prov.source_name),
        "confidence": pa.array(conf, pa.float64()).cast(schema.field("confidence").type),
        "created_at": same("created_at", prov.created_at),
        "run_id": same("run_id", prov.run_id),
        "taxonomy_version": same("taxonomy_version", prov.taxonomy_version),
        "model_influenced": pa.array(influenced, pa.bool_()),
    }
    return pa.table([columns[f.name] for f in schema], schema=schema)
