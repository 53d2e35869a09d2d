"""The lineage of a registered model, down to its labels: the data snapshot it trained on,
how many label events of each source kind and source name that snapshot holds, the
labeling functions behind its label-model labels (and their hash), the human
annotators, the gold snapshot it was judged on, the code version, and the champion it
was compared with.

    semilabel lineage models:/semilabel-classifier/3
    semilabel lineage models:/semilabel-classifier@champion --json
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException

from tasks.registry import TAG_GATE, RegistryRef
from tasks.store import LABELS, SNAPSHOTS, Store

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class LineageError(ValueError):
    """A model URI or a snapshot cannot be traced; the message says which and why."""


@dataclass(frozen=True)
class SnapshotLineage:
    snapshot_id: str
    examples: int
    label_events: dict[str, int]  # by source kind
    by_source: dict[str, int]  # by source name
    annotators: list[str]  # human source names
    labeling_functions: dict[str, list[str]]  # label-model source name -> function names


@dataclass(frozen=True)
class Lineage:
    model_name: str
    version: str
    run_id: str
    gate: str
    code_version: str
    compared_with: str  # the champion version at its gate, or "none"
    gold_snapshot_id: str
    training: SnapshotLineage
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        t = self.training
        lines = [
            f"# Lineage of {self.model_name} v{self.version}",
            "",
            f"- gate: {self.gate}; compared with champion: {self.compared_with}",
            f"- MLflow run: {self.run_id}; code version: {self.code_version}",
            f"- training snapshot: {t.snapshot_id} ({t.examples} examples, "
            f"{sum(t.label_events.values())} label events)",
            f"- gold test snapshot: {self.gold_snapshot_id}",
            "",
            "| source kind | label events |",
            "|---|---:|",
            *[f"| {k} | {n} |" for k, n in sorted(t.label_events.items())],
            "",
            "| source | label events |",
            "|---|---:|",
            *[f"| {k} | {n} |" for k, n in sorted(t.by_source.items())],
            "",
            f"Human annotators: {', '.join(t.annotators) or 'none'}.",
        ]
        for source, names in sorted(t.labeling_functions.items()):
            lines.append(f"Labeling functions behind `{source}`: {', '.join(names) or 'unknown'}.")
        return "\n".join(lines) + "\n"


def _label_matrix_functions(store: Store, run_ids: set[str]) -> list[str]:
    """The function names of the label matrices the given weak-labeling runs wrote."""
    names: list[str] = []
    for run in sorted(run_ids):
        sel = pafs.FileSelector(f"{store.base}/label_matrices/run={run}", allow_not_found=True)
        files = [i.path for i in store.fs.get_file_info(sel) if i.base_name.endswith(".parquet")]
        if files:
            schema = pq.read_schema(files[0], filesystem=store.fs)
            names += [n for n in schema.names if n != "example_id" and n not in names]
    return names


def snapshot_lineage(store: Store, snapshot_id: str) -> SnapshotLineage:
    """What a snapshot holds: its examples and its label events by kind and source."""
    items = store.read(
        SNAPSHOTS, ["item_kind", "item_id"], filter=pc.field("snapshot_id") == snapshot_id
    )
    if items.num_rows == 0:
        raise LineageError(f"snapshot {snapshot_id!r} is not in the store {store.uri!r}")
    kinds = items.column("item_kind").to_pylist()
    ids = items.column("item_id").to_pylist()
    events = [i for k, i in zip(kinds, ids, strict=True) if k == "label_event"]
    table = store.read(
        LABELS,
        ["event_id", "source_kind", "source_name", "run_id"],
        filter=pc.field("event_id").isin(pa.array(events, pa.string())),
    ).to_pylist()
    seen: dict[str, dict] = {}
    for row in table:  # an event an older version stored twice counts once
        seen.setdefault(row["event_id"], row)
    rows = list(seen.values())
    by_model: dict[str, set[str]] = {}
    for r in rows:
        if r["source_kind"] == "label_model":
            by_model.setdefault(r["source_name"], set()).add(r["run_id"])
    return SnapshotLineage(
        snapshot_id=snapshot_id,
        examples=kinds.count("example"),
        label_events=dict(Counter(r["source_kind"] for r in rows)),
        by_source=dict(Counter(r["source_name"] for r in rows)),
        annotators=sorted({r["source_name"] for r in rows if r["source_kind"] == "human"}),
        labeling_functions={
            source: _label_matrix_functions(store, runs) for source, runs in by_model.items()
        },
    )


def resolve_version(uri: str, tracking_uri: str) -> tuple[RegistryRef, str]:
    """`models:/name/3` or `models:/name@alias` -> (the registered model, its version)."""
    m = URI.match(uri)
    if not m:
        raise LineageError(
            f"{uri!r} is not a registered model URI: use models:/<name>/<version> or "
            "models:/<name>@<alias>, e.g. models:/semilabel-classifier@champion"
        )
    ref = RegistryRef(tracking_uri, m["name"])
    try:
        model = ref.client().get_registered_model(ref.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise LineageError(f"{uri}: the registry at {tracking_uri} failed: {exc}") from exc
        raise LineageError(
            f"there is no registered model {ref.model_name!r} at {tracking_uri}: check "
            "mlflow.tracking_uri and the name (the MLflow UI's Models page lists them)"
        ) from None
    if m["version"]:
        return ref, m["version"]
    aliases = model.aliases or {}
    if m["alias"] not in aliases:
        raise LineageError(
            f"{ref.model_name} has no alias {m['alias']!r} (it has: {sorted(aliases)})"
        )
    return ref, str(aliases[m["alias"]])


def lineage(uri: str, tracking_uri: str, store: Store) -> Lineage:
    """The lineage of the registered model version `uri`."""
    ref, version = resolve_version(uri, tracking_uri)
    try:
        mv = ref.client().get_model_version(ref.model_name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LineageError(
                f"{ref.model_name} has no version {version} at {tracking_uri} (the MLflow "
                "UI's Models page lists its versions)"
            ) from None
        raise LineageError(f"{uri}: the registry at {tracking_uri} failed: {exc}") from exc
    tags = dict(mv.tags or {})
    snapshot = tags.get("semilabel.snapshot_id")
    if not snapshot:
        raise LineageError(
            f"{ref.model_name} v{version} has no semilabel.snapshot_id tag: it was not "
            "registered by semilabel's retrain, so its data cannot be traced"
        )
    return Lineage(
        model_name=ref.model_name,
        version=version,
        run_id=mv.run_id or "",
        gate=tags.get(TAG_GATE, "unknown"),
        code_version=tags.get("semilabel.code_version", "unknown"),
        compared_with=tags.get("semilabel.champion_at_gate", "none"),
        gold_snapshot_id=tags.get("semilabel.gold_snapshot_id", ""),
        training=snapshot_lineage(store, snapshot),
        tags={k: v for k, v in tags.items() if k.startswith(("semilabel.", "gate."))},
    )
