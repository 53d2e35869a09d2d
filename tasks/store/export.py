"""The labels the next training reads, and their export to a file a person can check.

    semilabel labels export --out labels.parquet
    semilabel labels export --out labels.csv --as-of 2026-11-01T00:00Z

Training and the export take their labels from the same function (`training_labels`),
so the file shows what training would read: one label per example, with where it came
from, for the examples the store held then.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from configs.data import DataSpec
from configs.train import LabelsConfig
from tasks.store.datasets import EXAMPLES, Store
from tasks.store.holdout import GoldSplit
from tasks.store.resolution import LatestLabels

EXPORT_COLUMNS = (
    "example_id",
    "label",
    "source_kind",
    "source_name",
    "event_id",
    "model_influenced",
    "confidence",  # the weight training gives a weak label (a human label weighs 1)
)
FORMATS = {".parquet": "parquet", ".csv": "csv"}


class ExportError(ValueError):
    """The export cannot be written; the message names the file and what to change."""


@dataclass(frozen=True)
class LabelExport:
    path: str
    rows: int
    by_kind: dict[str, int]  # labels by source kind
    model_influenced: int
    as_of: datetime | None

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items())) or "none"
        when = f"as of {self.as_of.isoformat()}" if self.as_of else "now"
        return (
            f"wrote {self.rows} training labels ({kinds}; {self.model_influenced} "
            f"model-influenced), as training would read them {when}, to {self.path}"
        )


def training_labels(latest: LatestLabels, data: DataSpec, labels: LabelsConfig) -> pa.Table:
    """One training label per example from the label log as `latest` read it: human
    labels first, then weak labels above `labels.confidence_floor`, model-influenced ones
    capped at `labels.max_model_share`; gold examples and labels outside the taxonomy
    left out (see `tasks.store.labels.resolve_labels`)."""
    return latest.resolve(
        confidence_floor=labels.confidence_floor,
        max_model_share=labels.max_model_share,
        leave_out=GoldSplit(data.gold.fraction, data.gold.salt, data.gold.test_share),
        classes=data.classes,
    )


def read_training_labels(
    store: Store, data: DataSpec, labels: LabelsConfig, *, as_of: datetime | None
) -> pa.Table:
    """The labels training would read from `store` now, or as of `as_of` (`train.as_of`):
    those of `training_labels` whose example the store held then (training cannot read a
    label without its image). Training also leaves out a copy of a gold image stored
    under another id, which only decoding the images can find; such a label is still
    listed."""
    table = training_labels(LatestLabels.read(store, as_of), data, labels)
    held_ids = _held_example_ids(store, as_of)
    return table.filter(pc.is_in(table.column("example_id"), value_set=held_ids))


def _held_example_ids(store: Store, as_of: datetime | None) -> pa.Array:
    """The ids of the examples ingested up to `as_of` (all without): ids only, never the
    images."""
    flt = None
    if as_of is not None:
        flt = pc.field("ingested_at") <= pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    held = [b.column(0) for b in store.iter_batches(EXAMPLES, ["example_id"], filter=flt)]
    return pa.chunked_array(held, pa.string()).combine_chunks()


def export_labels(
    store: Store, data: DataSpec, labels: LabelsConfig, out: str | Path, *, as_of: datetime | None
) -> LabelExport:
    """Write `read_training_labels` (as of `as_of`) to `out`, as Parquet or CSV by its
    suffix (the folder is created; an existing file is replaced whole, never left
    half-written)."""
    path = Path(out)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ExportError(
            f"cannot export labels to {path}: the file name must end in "
            f"{' or '.join(FORMATS)} (the format is chosen by the suffix)"
        )
    table = read_training_labels(store, data, labels, as_of=as_of).select(list(EXPORT_COLUMNS))
    _write_whole(table, path, fmt)
    return LabelExport(
        path=str(path),
        rows=table.num_rows,
        by_kind=dict(Counter(table.column("source_kind").to_pylist())),
        model_influenced=sum(table.column("model_influenced").to_pylist()),
        as_of=as_of,
    )


def _write_whole(table: pa.Table, path: Path, fmt: str) -> None:
    """`table` to `path` in `fmt`, through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp, compression="zstd")
        else:
            pcsv.write_csv(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
