"""The store's label state as Arrow columns, read once per computation: what every SLI
family (`tasks.slis.compute`) is computed over, with vectorised operations rather than
a Python object per example or event.

Where the examples or the log hold a key twice, the last row stored counts (as a dict
built in storage order would have it): an example's ingest time, an event's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from configs.data import DataSpec
from configs.train import LabelsConfig
from tasks.slis.inputs import gold_split
from tasks.store import DEV, EXAMPLES, LABELS, LatestLabels, Store

EVENT_COLUMNS = ["event_id", "example_id", "label", "source_kind", "source_name", "created_at"]
US_PER_S = 1e6
_TS = pa.timestamp("us", tz="UTC")
Column = pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class LabelColumns:
    examples: pa.Table  # example_id, ingested_at: one row per stored example
    events: pa.Table  # the whole label log (`EVENT_COLUMNS`), in storage order
    resolved: pa.Table  # one training label per example, gold left out (RESOLVED_SCHEMA)
    # example_id, label, part: each example's latest human label in the taxonomy, and
    # its gold part ("": not gold, "dev", "test")
    human: pa.Table

    @classmethod
    def read(cls, store: Store, data: DataSpec, labels: LabelsConfig) -> LabelColumns:
        split = gold_split(data)
        latest = LatestLabels.read(store)
        human = latest.human_table(data.classes)
        ids = human.column("example_id").combine_chunks()
        examples = store.read(EXAMPLES, ["example_id", "ingested_at"])
        return cls(
            examples=last_per_key(examples, "example_id"),
            events=store.read(LABELS, EVENT_COLUMNS),
            resolved=latest.resolve(
                confidence_floor=labels.confidence_floor,
                max_model_share=labels.max_model_share,
                leave_out=split,
                classes=data.classes,
            ),
            human=pa.table(
                {
                    "example_id": ids,
                    "label": human.column("label"),
                    "part": pa.array(split.parts(ids), pa.string()),
                }
            ),
        )

    @property
    def gold_human_ids(self) -> pa.ChunkedArray:
        """Gold examples (either part) with a human label."""
        return self.human.filter(pc.field("part") != "").column("example_id")

    @property
    def gold_dev(self) -> pa.Table:
        """example_id, label: the human truth of the gold dev part."""
        return self.human.filter(pc.field("part") == DEV).select(["example_id", "label"])

    def labeled_ids(self) -> pa.Array:
        """Examples with a label: a training label, or a human label on gold."""
        return pc.unique(_concat(self.resolved.column("example_id"), self.gold_human_ids))

    def labeled_by_kind(self) -> dict[str, int]:
        """Examples labeled by each kind of source: their training label's, and `human`
        for gold (present when zero)."""
        gold = self.gold_human_ids
        pairs = pa.table(
            {
                "example_id": _concat(self.resolved.column("example_id"), gold),
                "kind": _concat(self.resolved.column("source_kind"), pa.repeat("human", len(gold))),
            }
        )
        counts = pairs.group_by("kind").aggregate([("example_id", "count_distinct")])
        found = zip(
            counts.column("kind").to_pylist(),
            counts.column("example_id_count_distinct").to_pylist(),
            strict=True,
        )
        return {"human": 0, **dict(found)}

    def created_at(self, event_ids: Column) -> pa.Array:
        """When each of `event_ids` found in the log was created (the others left out)."""
        times = last_per_key(self.events.select(["event_id", "created_at"]), "event_id")
        at = pc.index_in(event_ids, value_set=times.column("event_id").combine_chunks())
        return times.column("created_at").take(at.filter(pc.is_valid(at)))

    def ingest_to_first_label_s(self) -> np.ndarray:
        """Seconds from ingest to the first label event (0 when labeled before ingest) of
        each labeled example that is stored and has an event."""
        first = self.events.group_by("example_id").aggregate([("created_at", "min")])
        ids = self.labeled_ids()
        in_log = pc.index_in(ids, value_set=first.column("example_id").combine_chunks())
        # the labeled examples' rows first: an index over them, not over every example
        rows = self.examples.filter(pc.is_in(self.examples.column("example_id"), value_set=ids))
        stored = pc.index_in(ids, value_set=rows.column("example_id").combine_chunks())
        both = pc.and_(pc.is_valid(in_log), pc.is_valid(stored))
        labeled_at = first.column("created_at_min").take(in_log.filter(both))
        ingested_at = rows.column("ingested_at").take(stored.filter(both))
        return np.maximum(seconds_between(labeled_at, ingested_at), 0.0)

    def human_answers_right(self) -> np.ndarray:
        """Per (human source, gold dev example): whether the source's latest answer (the
        newest; the first stored of equally new ones) is the example's gold label."""
        truth = self.gold_dev
        on_gold = pc.field("example_id").isin(truth.column("example_id").combine_chunks())
        answers = self.events.filter((pc.field("source_kind") == "human") & on_gold)
        newest_first = answers.take(pc.sort_indices(answers, [("created_at", "descending")]))
        latest = newest_first.group_by(["source_name", "example_id"], use_threads=False).aggregate(
            [("label", "first", pc.ScalarAggregateOptions(skip_nulls=False))]
        )
        at = pc.index_in(latest.column("example_id"), value_set=truth.column("example_id"))
        right = pc.equal(latest.column("label_first"), truth.column("label").take(at))
        return np.asarray(pc.fill_null(right, False), dtype=bool)

    def gold_dev_classes(self, example_ids: Column, classes: tuple[str, ...]) -> np.ndarray:
        """The index in `classes` of each example's gold dev label; -1 where it has none."""
        truth = self.gold_dev
        class_of = pc.index_in(truth.column("label"), value_set=pa.array(classes, pa.string()))
        at = pc.index_in(example_ids, value_set=truth.column("example_id").combine_chunks())
        return np.asarray(pc.fill_null(class_of.take(at), -1), dtype=np.int64)


def last_per_key(table: pa.Table, key: str) -> pa.Table:
    """`table` with one row per value of `key`, the last one, in storage order."""
    if pc.count_distinct(table.column(key), mode="all").as_py() == table.num_rows:
        return table  # the usual case: each key once
    rows = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = rows.group_by(key).aggregate([("_row", "max")]).column("_row_max")
    return table.take(np.sort(last.to_numpy()))


def seconds_between(later: Column | datetime, earlier: Column) -> np.ndarray:
    """`later - earlier` in seconds, elementwise; `later` may be one time."""
    if isinstance(later, datetime):
        later_us = np.int64(pa.scalar(later, _TS).value)
    else:
        later_us = _micros(later)
    return (later_us - _micros(earlier)) / US_PER_S


def _micros(times: Column) -> np.ndarray:
    return np.asarray(pc.cast(times, _TS).cast(pa.int64()), dtype=np.int64)


def value_counts(values: Column) -> dict:
    """How often each value occurs."""
    counts = pc.value_counts(values)
    return dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def _concat(*columns: Column) -> pa.ChunkedArray:
    chunks = [c for col in columns for c in getattr(col, "chunks", [col])]
    return pa.chunked_array(chunks, pa.string())


def latest_label_matrix(store: Store) -> pa.Table | None:
    """The label matrix of the latest weak-labeling run (example_id and one vote
    column per labeling function, -1: abstain); None when no run wrote one."""
    sel = pafs.FileSelector(f"{store.base}/label_matrices", allow_not_found=True)
    runs = [i for i in store.fs.get_file_info(sel) if i.type == pafs.FileType.Directory]
    if not runs:
        return None
    newest = max(runs, key=lambda i: i.mtime.timestamp() if i.mtime else 0.0)
    files = [
        i.path
        for i in store.fs.get_file_info(pafs.FileSelector(newest.path))
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
    ]
    return ds.dataset(files, format="parquet", filesystem=store.fs).to_table() if files else None
