"""The lineage of a registered model, down to its labels: the data snapshot it trained on,
how many label events of each source kind and source name that snapshot holds, the
labeling functions behind its label-model labels (and their hash), the people who
labeled (annotators) apart from the labels that came with the data (label sources), the
labeled/unlabeled split, the instant the data was read (what `--as-of` rebuilds it
from), the settings that differ from the champion's, the gold snapshot it was judged
on, the code version, and the champion it was compared with.

    semilabel lineage models:/semilabel-classifier/3
    semilabel lineage models:/semilabel-classifier@champion --json
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.registry.aliases import CHAMPION, TAG_GATE, RegistryRef
from tasks.store import LABELS, SNAPSHOTS, Store

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
# People's answers are `human` events named `<tool>:<annotator>` (tasks.annotation.answers)
# from these tools. Other `human` events came with the data (an image folder's class
# folders, a manifest's label column, mnist5k) or from the simulated annotator: sources.
PEOPLE_TOOLS = ("csv", "label_studio")
DATA_PARAMS = "data."  # run params that count the training data (the split), not settings
NOT_LOGGED = "not logged"


class LineageError(ValueError):
    """A model URI or a snapshot cannot be traced; the message says which and why."""


@dataclass(frozen=True)
class SnapshotLineage:
    snapshot_id: str
    examples: int
    label_events: dict[str, int]  # by source kind
    by_source: dict[str, int]  # by source name
    annotators: dict[str, int]  # people -> their label events
    label_sources: dict[str, int]  # human-kind sources that are not people -> label events
    labeling_functions: dict[str, list[str]]  # label-model source name -> function names
    taken_at: str  # when the snapshot was first recorded (ISO 8601, UTC)


@dataclass(frozen=True)
class TrainingSplit:
    """The examples the training run had, as it logged them (`data.*` params); None
    where the run did not log it."""

    human: int | None  # labeled by people or with the data
    weak: int | None  # labeled by weak sources (label model...), weighted by confidence
    unlabeled: int | None
    gold_dev: int | None  # held out; they drew the training curves

    def line(self) -> str:
        if self.human is None or self.weak is None:
            labeled = "labeled examples not logged"
        else:
            labeled = f"{self.human + self.weak} labeled ({self.human} human, {self.weak} weak)"
        unlabeled = "?" if self.unlabeled is None else self.unlabeled
        gold = "" if self.gold_dev is None else f"; {self.gold_dev} gold dev drew the curves"
        return f"{labeled}, {unlabeled} unlabeled{gold}"


@dataclass(frozen=True)
class SettingChange:
    setting: str  # a run param (tasks.tracking.MODEL_PARAMS), e.g. train.lr
    this: str  # this version's value
    other: str  # the compared version's value


@dataclass(frozen=True)
class SettingsDiff:
    """The settings (run params) where this version differs from another one: the
    champion, or for the champion itself the champion it replaced."""

    other_version: str | None  # None: there is nothing to compare with (`note` says why)
    other_role: str = ""  # the champion, the champion it replaced, or at its gate
    changes: tuple[SettingChange, ...] = ()
    note: str = ""

    def markdown(self, version: str) -> list[str]:
        if self.other_version is None:
            return [f"Settings: {self.note}"]
        whose = f"v{self.other_version}'s ({self.other_role})"
        if self.note:
            return [f"Settings compared with {whose}: {self.note}"]
        if not self.changes:
            return [f"Settings: the same as {whose}."]
        return [
            f"Settings that differ from {whose}:",
            "",
            f"| setting | v{version} | v{self.other_version} |",
            "|---|---|---|",
            *[f"| {c.setting} | {c.this} | {c.other} |" for c in self.changes],
        ]


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
    split: TrainingSplit
    as_of: str  # the instant the training data was read: `--as-of` rebuilds it
    settings: SettingsDiff
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        t = self.training
        lines = [
            f"# Lineage of {self.model_name} v{self.version}",
            "",
            f"- gate: {self.gate}; compared with champion: {_version(self.compared_with)}",
            f"- MLflow run: {self.run_id}; code version: {self.code_version}",
            f"- training snapshot: {t.snapshot_id} ({t.examples} examples, "
            f"{sum(t.label_events.values())} label events), read as of {self.as_of}",
            f"- split: {self.split.line()}",
            f"- gold test snapshot: {self.gold_snapshot_id}",
            "",
            *self.settings.markdown(self.version),
            "",
            "| source kind | label events |",
            "|---|---:|",
            *[f"| {k} | {n} |" for k, n in sorted(t.label_events.items())],
            "",
            "| source | label events |",
            "|---|---:|",
            *[f"| {k} | {n} |" for k, n in sorted(t.by_source.items())],
            "",
            f"Annotators (people): {_counts(t.annotators)}.",
            f"Label sources (labels that came with the data): {_counts(t.label_sources)}.",
        ]
        for source, names in sorted(t.labeling_functions.items()):
            lines.append(f"Labeling functions behind `{source}`: {', '.join(names) or 'unknown'}.")
        lines += [
            "",
            f"Its training data, rebuilt from the store as it was at {self.as_of}:",
            "",
            f"    semilabel labels export --as-of {self.as_of} --out labels-v{self.version}.csv",
            f"    semilabel train --as-of {self.as_of}",
            "",
            "The first writes the labels it trained on; the second trains on the same data "
            "again (with the run's settings, its config.json, to rebuild the model too).",
        ]
        return "\n".join(lines) + "\n"


def _version(v: str) -> str:
    return v if v in ("", "none") else f"v{v}"


def _counts(named: dict[str, int]) -> str:
    return ", ".join(f"{k} ({n})" for k, n in sorted(named.items())) or "none"


def _person(source_name: str) -> str | None:
    """The annotator behind a human label event's source, or None for a source that is
    not a person."""
    tool, _, who = source_name.partition(":")
    return who if who and tool in PEOPLE_TOOLS else None


def _instant(t: datetime) -> str:
    """A time as `--as-of` takes it back: UTC, to the microsecond the store keeps."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
        SNAPSHOTS,
        ["item_kind", "item_id", "created_at"],
        filter=pc.field("snapshot_id") == snapshot_id,
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
    people: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for r in rows:
        if r["source_kind"] == "label_model":
            by_model.setdefault(r["source_name"], set()).add(r["run_id"])
        elif r["source_kind"] == "human":
            who = _person(r["source_name"])
            if who is not None:
                people[who] += 1
            else:
                sources[r["source_name"]] += 1
    # The same contents always get the same id, so a snapshot is recorded once, by the
    # first run that read them: the store held exactly these then.
    taken = pc.min(items.column("created_at")).as_py()
    return SnapshotLineage(
        snapshot_id=snapshot_id,
        examples=kinds.count("example"),
        label_events=dict(Counter(r["source_kind"] for r in rows)),
        by_source=dict(Counter(r["source_name"] for r in rows)),
        annotators=dict(people),
        label_sources=dict(sources),
        labeling_functions={
            source: _label_matrix_functions(store, runs) for source, runs in by_model.items()
        },
        taken_at=_instant(taken),
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


def _run(client: MlflowClient, run_id: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(params, tags) of a version's training run; empty when the run is gone."""
    if not run_id:
        return {}, {}
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise LineageError(f"run {run_id}: the tracking store failed: {exc}") from exc
        return {}, {}
    return dict(run.data.params), dict(run.data.tags)


def _split(params: dict[str, str]) -> TrainingSplit:
    def count(name: str) -> int | None:
        value = params.get(f"{DATA_PARAMS}{name}")
        return int(value) if value is not None and value.isdigit() else None

    return TrainingSplit(
        count("n_human"), count("n_weak"), count("n_unlabeled"), count("n_gold_dev")
    )


def settings_diff(
    ref: RegistryRef, version: str, params: dict[str, str], compared_with: str
) -> SettingsDiff:
    """The settings where `version` (its run `params`) differs from the champion, or, for
    the champion itself, from the champion it replaced (`compared_with`, at its gate)."""
    client = ref.client()
    try:
        aliases = client.get_registered_model(ref.model_name).aliases or {}
    except MlflowException as exc:  # the lineage stands without it
        return SettingsDiff(None, note=f"the registry could not be read ({exc}).")
    champion = str(aliases[CHAMPION]) if CHAMPION in aliases else None
    if champion is not None and champion != version:
        other, role = champion, "the champion"
    elif compared_with not in ("", "none") and compared_with != version:
        role = "the champion it replaced" if champion == version else "the champion at its gate"
        other = compared_with
    else:
        why = "it is the champion and replaced none" if champion == version else "no champion"
        return SettingsDiff(None, note=f"nothing to compare with ({why}).")
    gone = "has no params: it was deleted, or not trained by semilabel."
    if not params:
        return SettingsDiff(other, role, note=f"v{version}'s run {gone}")
    try:
        other_params, _ = _run(client, client.get_model_version(ref.model_name, other).run_id)
    except (MlflowException, LineageError) as exc:
        return SettingsDiff(other, role, note=f"v{other} cannot be read ({exc}).")
    if not other_params:
        return SettingsDiff(other, role, note=f"v{other}'s run {gone}")
    keys = sorted(k for k in params.keys() | other_params.keys() if not k.startswith(DATA_PARAMS))
    changed = tuple(
        SettingChange(k, params.get(k, NOT_LOGGED), other_params.get(k, NOT_LOGGED))
        for k in keys
        if params.get(k) != other_params.get(k)
    )
    return SettingsDiff(other, role, changed)


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
    params, run_tags = _run(ref.client(), mv.run_id)
    training = snapshot_lineage(store, snapshot)
    compared_with = tags.get("semilabel.champion_at_gate", "none")
    # a run with train.as_of read the store as of then, not when it recorded the snapshot
    as_of = run_tags.get("semilabel.as_of")
    try:
        read_at = _instant(datetime.fromisoformat(as_of)) if as_of else training.taken_at
    except ValueError:  # a tag not written by semilabel: shown as it is
        read_at = as_of or training.taken_at
    return Lineage(
        model_name=ref.model_name,
        version=version,
        run_id=mv.run_id or "",
        gate=tags.get(TAG_GATE, "unknown"),
        code_version=tags.get("semilabel.code_version", "unknown"),
        compared_with=compared_with,
        gold_snapshot_id=tags.get("semilabel.gold_snapshot_id", ""),
        training=training,
        split=_split(params),
        as_of=read_at,
        settings=settings_diff(ref, version, params, compared_with),
        tags={k: v for k, v in tags.items() if k.startswith(("semilabel.", "gate."))},
    )
