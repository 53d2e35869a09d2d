"""The label event log: event ids and each source's latest word (one training label per
example is `tasks.store.resolution`'s).

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
from typing import Generic, Protocol, TypeVar

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tasks.store.datasets import LABELS, Store

MODEL_KINDS = ("model",)  # source kinds that are a model's output by definition
# Two confidences within this are the same word: "equal to 4 decimal places", measured as
# a distance. Rounding both sides instead puts a cliff at every ...5: a float32 (what the
# log stores) and the float64 it came from round apart about 130 times in a million.
CONFIDENCE_TOLERANCE = 5e-5


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
