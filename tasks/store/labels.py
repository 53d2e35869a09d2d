"""The label event log: event ids, each source's latest word, and one training label per
example.

An event id identifies one act of labeling. Sources that carry their own annotation id
(Label Studio) or time use it; sources that are re-read whole (an image folder, a
manifest, a label-model run) write an event only when what they say about an example
changes, and the event's id includes the event it follows from that same source. So a
correction A -> B -> A from one source is three events, while re-reading an unchanged
source, or two runs reading it at once, adds nothing twice.

Weak labels are the exception to "each source's latest word": the latest label-model
run is the whole truth of them, whichever functions it used (see
`tasks.store.weak_labels`). Where it abstains it writes a withdrawal, a `label_model`
event without a label, and an example whose latest label-model event is a withdrawal
has no weak label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tasks.store.datasets import LABELS, Store
from tasks.store.holdout import GoldSplit

MODEL_KINDS = ("model",)  # source kinds that are a model's output by definition
# Two confidences within this are the same word: "equal to 4 decimal places", measured as
# a distance. Rounding both sides instead puts a cliff at every ...5: a float32 (what the
# log stores) and the float64 it came from round apart about 130 times in a million.
CONFIDENCE_TOLERANCE = 5e-5

RESOLVED_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("label", pa.string()),
        ("source_kind", pa.string()),
        ("source_name", pa.string()),
        ("confidence", pa.float32()),
        ("event_id", pa.string()),
        ("model_influenced", pa.bool_()),
    ]
)


def label_event_id(
    example_id: str, label: str, source_kind: str, source_name: str, *, act: str
) -> str:
    """The id of one act of labeling. `act` tells acts of the same source apart: the
    source's own annotation id or time, or `after:<event id>` for a source that re-states
    its labels (see `SourceLog`)."""
    key = f"{example_id}|{label}|{source_kind}|{source_name}|{act}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def same_confidence(stored: float, new: float) -> bool:
    """Whether `new` says the same as the `stored` confidence: compared as the log would
    store it (float32), within `CONFIDENCE_TOLERANCE`."""
    return abs(float(np.float32(new)) - float(np.float32(stored))) <= CONFIDENCE_TOLERANCE


def model_influenced(source_kind: str, flag: bool | None) -> bool:
    """Whether an event's label came (partly) from a model; old events carry no flag."""
    return bool(flag) if flag is not None else source_kind in MODEL_KINDS


@dataclass(frozen=True)
class SourceEvent:
    event_id: str
    label: str
    confidence: float


class _HasEventId(Protocol):
    event_id: str


E = TypeVar("E", bound=_HasEventId)


def read_events(
    store: Store, files: list[str], cols: list[str], flt: pc.Expression
) -> Iterator[tuple]:
    """The `cols` of the label-log events in `files` that match `flt`, row by row."""
    table = ds.dataset(files, format="parquet", filesystem=store.fs).to_table(
        columns=cols, filter=flt
    )
    return zip(*(table.column(c).to_pylist() for c in cols), strict=True)


class LatestEvents(Generic[E]):
    """Each example's latest event of one log (ordered by (created_at, event id), the
    order label resolution uses), and the ids of every event seen."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[tuple, E]] = {}
        self.event_ids: set[str] = set()

    def record(self, example_id: str, event: E, key: tuple) -> None:
        """`event` (with its `event_id`) about `example_id`, ordered by `key`."""
        self.event_ids.add(event.event_id)
        cur = self._latest.get(example_id)
        if cur is None or key > cur[0]:
            self._latest[example_id] = (key, event)

    def latest(self, example_id: str) -> E | None:
        hit = self._latest.get(example_id)
        return hit[1] if hit else None


class SourceLog(LatestEvents[SourceEvent]):
    """What one source (kind and name) last said about each example, and the ids of
    every event it wrote. `next_event` turns "the source says `label` about `example`"
    into a new event id, or None when that is already the source's latest word."""

    def __init__(self, source_kind: str, source_name: str):
        super().__init__()
        self.source_kind = source_kind
        self.source_name = source_name

    @classmethod
    def read(cls, store: Store, source_kind: str, source_name: str) -> SourceLog:
        log = cls(source_kind, source_name)
        log.add_files(store, store.files(LABELS))
        return log

    def add_files(self, store: Store, files: Iterable[str]) -> None:
        """Take in the events of this source found in `files` of the label log."""
        files = list(files)
        if not files:
            return
        cols = ["event_id", "example_id", "label", "confidence", "created_at"]
        flt = (pc.field("source_kind") == self.source_kind) & (
            pc.field("source_name") == self.source_name
        )
        for ev, ex, lab, conf, ts in read_events(store, files, cols, flt):
            self.record(ex, SourceEvent(ev, lab, float(conf)), (ts, ev))

    def next_event(self, example_id: str, label: str, confidence: float = 1.0) -> str | None:
        """The id of a new event for `label` (at `confidence`, see `same_confidence`), or
        None when the source's latest event already says that."""
        prev = self.latest(example_id)
        if (
            prev is not None
            and prev.label == label
            and same_confidence(prev.confidence, confidence)
        ):
            return None
        act = f"after:{prev.event_id}" if prev else "first"
        return label_event_id(example_id, label, self.source_kind, self.source_name, act=act)


def _majority(votes: list[_Event]) -> _Event | None:
    """The most voted label's latest event, or None on a tie for the most votes."""
    counts: dict[str, int] = {}
    for e in votes:
        counts[e.label] = counts.get(e.label, 0) + 1
    best = max(counts.values())
    winners = [label for label, n in counts.items() if n == best]
    if len(winners) > 1:
        return None
    return max((e for e in votes if e.label == winners[0]), key=lambda e: e.key)


@dataclass(frozen=True)
class _Event:
    key: tuple  # (created_at, event_id): later wins, event_id breaks ties deterministically
    label: str | None  # None: a label-model withdrawal
    source_kind: str
    source_name: str
    confidence: float
    event_id: str
    model_influenced: bool


class LatestLabels:
    """The label each example currently has from each kind of source that can become a
    training label (human, label model, model), read in one streaming pass over the log.

    For label-model and model labels that is the latest event, across every source of
    the kind; a label-model withdrawal (an event without a label) leaves the example
    without a weak label. Human labels come in rounds: the events one run wrote (an
    ingest, an annotation import) are one round, and the latest round decides. Within a
    round each annotator's latest answer is one vote and the majority wins; a tie leaves
    the example without a human label (listed in `unresolved`) until a later round
    settles it. A round of one source (a folder, a reviewer's correction) is simply that
    source's latest word.
    """

    KINDS = ("human", "label_model", "model")

    def __init__(self, by_kind: dict[str, dict[str, _Event]], unresolved: dict[str, list[str]]):
        self.by_kind = by_kind
        self.unresolved = unresolved  # example -> the tied labels of its latest round

    @classmethod
    def read(
        cls, store: Store, as_of: datetime | None = None, kinds: tuple[str, ...] = KINDS
    ) -> LatestLabels:
        """From the whole log, or only the events created up to `as_of` (time travel).
        `kinds`: the source kinds to read (the others stay empty): a reader of human
        labels alone does not hold one object per weak label (about one per example
        once weak labeling ran)."""
        unknown = set(kinds) - set(cls.KINDS)
        if unknown:
            raise ValueError(f"unknown label source kinds {sorted(unknown)}; use {cls.KINDS}")
        latest: dict[str, dict[str, _Event]] = {k: {} for k in cls.KINDS}
        # human: example -> run -> source -> latest event of that source in that run
        rounds: dict[str, dict[str, dict[str, _Event]]] = {}
        for example, run, event in _stream_events(store, tuple(kinds), as_of):
            if event.source_kind == "human":
                _keep_later(
                    rounds.setdefault(example, {}).setdefault(run, {}), event.source_name, event
                )
            else:
                _keep_later(latest[event.source_kind], example, event)
        for kind in ("label_model", "model"):  # withdrawn: no label
            latest[kind] = {ex: e for ex, e in latest[kind].items() if e.label is not None}
        latest["human"], unresolved = _decide_rounds(rounds)
        return cls(latest, unresolved)

    def human(self, classes: Iterable[str]) -> dict[str, tuple[str, str]]:
        """example_id -> (class name, event id) of its latest human label, for labels in
        `classes` only."""
        wanted = set(classes)
        return {
            ex: (e.label, e.event_id)
            for ex, e in self.by_kind["human"].items()
            if e.label in wanted
        }

    def resolve(
        self,
        *,
        confidence_floor: float,
        max_model_share: float,
        leave_out: GoldSplit | None = None,
        classes: Iterable[str] | None = None,
    ) -> pa.Table:
        """One training label per example (see `resolve_labels`)."""
        latest = self._usable(leave_out, classes)
        chosen: dict[str, _Event] = dict(latest["human"])
        influenced: dict[str, _Event] = {}
        for ex, e in latest["label_model"].items():
            if ex not in chosen and e.confidence >= confidence_floor:
                (influenced if e.model_influenced else chosen)[ex] = e
        for ex, e in latest["model"].items():
            if ex not in chosen and ex not in influenced and e.confidence >= confidence_floor:
                influenced[ex] = e
        chosen.update(_most_confident(influenced, max_model_share, len(chosen)))
        return _resolved_table(chosen)

    def _usable(
        self, leave_out: GoldSplit | None, classes: Iterable[str] | None
    ) -> dict[str, dict[str, _Event]]:
        """`by_kind` less the labels outside `classes` and the examples `leave_out` holds
        (gold)."""
        wanted = set(classes) if classes is not None else None
        usable: dict[str, dict[str, _Event]] = {}
        for kind, table in self.by_kind.items():
            keep = {ex: e for ex, e in table.items() if wanted is None or e.label in wanted}
            if leave_out is not None and keep:
                ids = list(keep)
                for ex, gold in zip(ids, leave_out.is_gold(ids), strict=True):
                    if gold:
                        del keep[ex]
            usable[kind] = keep
        return usable


def _stream_events(
    store: Store, kinds: tuple[str, ...], as_of: datetime | None
) -> Iterator[tuple[str, str, _Event]]:
    """(example, run, event) for every event of `kinds` in the log created up to `as_of`
    (all of them without), read batch by batch."""
    cols = [
        "example_id",
        "label",
        "source_kind",
        "source_name",
        "confidence",
        "created_at",
        "event_id",
        "model_influenced",
        "run_id",
    ]
    flt = pc.field("source_kind").isin(pa.array(list(kinds)))
    if as_of is not None:
        flt = flt & (pc.field("created_at") <= pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
    for batch in store.iter_batches(LABELS, cols, filter=flt):
        rows = batch.to_pydict()
        for ex, lab, kind, name, conf, ts, ev, infl, run in zip(
            *(rows[c] for c in cols), strict=True
        ):
            infl = model_influenced(kind, infl)
            yield ex, run, _Event((ts, ev), lab, kind, name, float(conf or 0.0), ev, infl)


def _keep_later(table: dict[str, _Event], key: str, event: _Event) -> None:
    """`table[key]` becomes `event` unless it holds a later one."""
    cur = table.get(key)
    if cur is None or event.key > cur.key:
        table[key] = event


def _decide_rounds(
    rounds: dict[str, dict[str, dict[str, _Event]]],
) -> tuple[dict[str, _Event], dict[str, list[str]]]:
    """Each example's human label from its latest round of votes (example -> run ->
    source -> latest event), and the examples whose latest round tied, with its labels."""
    decided: dict[str, _Event] = {}
    unresolved: dict[str, list[str]] = {}
    for ex, by_run in rounds.items():
        last = max(by_run.values(), key=lambda votes: max(e.key for e in votes.values()))
        winner = _majority(list(last.values()))
        if winner is None:
            unresolved[ex] = sorted({e.label for e in last.values()})
        else:
            decided[ex] = winner
    return decided, unresolved


def _most_confident(
    influenced: dict[str, _Event], max_model_share: float, n_chosen: int
) -> dict[str, _Event]:
    """The model-influenced labels that fit under `max_model_share` beside `n_chosen`
    other labels, most confident first (ties by example id)."""
    pool = sorted(
        ((e.confidence, ex, e) for ex, e in influenced.items()), key=lambda t: (-t[0], t[1])
    )
    if max_model_share >= 1.0:
        cap = len(pool)
    else:
        cap = int(max_model_share / (1.0 - max_model_share) * n_chosen)
    return {ex: e for _, ex, e in pool[:cap]}


def _resolved_table(chosen: dict[str, _Event]) -> pa.Table:
    """The chosen labels as a `RESOLVED_SCHEMA` table, by example id."""
    ids = sorted(chosen)
    evs = [chosen[i] for i in ids]
    return pa.table(
        {
            "example_id": ids,
            "label": [e.label for e in evs],
            "source_kind": [e.source_kind for e in evs],
            "source_name": [e.source_name for e in evs],
            "confidence": pa.array([e.confidence for e in evs], pa.float32()),
            "event_id": [e.event_id for e in evs],
            "model_influenced": [e.model_influenced for e in evs],
        },
        schema=RESOLVED_SCHEMA,
    )


def resolve_labels(
    store: Store,
    *,
    confidence_floor: float,
    max_model_share: float,
    leave_out: GoldSplit | None = None,
    classes: Iterable[str] | None = None,
) -> pa.Table:
    """One training label per example, from the append-only event log.

    The latest human label wins. Otherwise the weak label, the latest label-model run's
    word (none where it abstained), counts when its confidence reaches
    `confidence_floor`. Every label a model influenced (a model's own prediction, or a
    label-model label fed by a model-backed labeling function) comes last and, together,
    they are capped at `max_model_share` of the resolved labels (most confident first),
    so a model cannot feed on its own output whatever path its labels take. Everything
    else stays unlabeled. Streams the log batch by batch.

    With `leave_out` (gold) and `classes` (the taxonomy), labels training cannot use are
    left out before the cap is taken, so the share holds for the labels it does use.
    """
    return LatestLabels.read(store).resolve(
        confidence_floor=confidence_floor,
        max_model_share=max_model_share,
        leave_out=leave_out,
        classes=classes,
    )


def human_labels(store: Store, classes: Iterable[str]) -> dict[str, tuple[str, str]]:
    """example_id -> (class name, event id) of its latest human label, for labels in
    `classes` only."""
    return LatestLabels.read(store, kinds=("human",)).human(classes)
