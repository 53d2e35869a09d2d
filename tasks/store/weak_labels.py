"""The weak labels in force, and how a label-model run replaces them.

The latest label-model run is the whole truth of weak labels: a label it gives replaces
whatever an earlier run said, and where it abstains the earlier label is withdrawn, so a
labeling function that is quarantined or removed takes the labels it alone produced with
it. A run still writes only what changed (a re-run on unchanged data writes nothing): a
new event where its word on an example differs from the weak label in force, and a
withdrawal (a `label_model` event whose label is null, at confidence 0) where an example
has a weak label and the run gives none. Label resolution then reads each example's
latest `label_model` event, as of any instant, and a withdrawal means no weak label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.datasets import LABELS, Store
from tasks.store.labels import (
    LatestEvents,
    label_event_id,
    model_influenced,
    read_events,
    same_confidence,
)

KIND = "label_model"


@dataclass(frozen=True)
class WeakEvent:
    event_id: str
    label: str | None  # None: a withdrawal
    confidence: float
    source_name: str  # the label model and the functions it used
    model_influenced: bool


class LabelModelLog(LatestEvents[WeakEvent]):
    """Each example's latest `label_model` event across every label-model source (a new
    set of functions is a new source), and the ids of every such event. `next_event` and
    `withdrawals` turn what a new run says into the events that make it the truth."""

    @classmethod
    def read(cls, store: Store) -> LabelModelLog:
        log = cls()
        log.add_files(store, store.files(LABELS))
        return log

    def add_files(self, store: Store, files: Iterable[str]) -> None:
        """Take in the label-model events found in `files` of the label log."""
        files = list(files)
        if not files:
            return
        cols = [
            "event_id",
            "example_id",
            "label",
            "confidence",
            "source_name",
            "model_influenced",
            "created_at",
        ]
        rows = read_events(store, files, cols, pc.field("source_kind") == KIND)
        for ev, ex, lab, conf, name, infl, ts in rows:
            event = WeakEvent(ev, lab, float(conf or 0.0), name, model_influenced(KIND, infl))
            self.record(ex, event, (ts, ev))

    def next_event(
        self,
        example_id: str,
        label: str,
        confidence: float,
        *,
        source_name: str,
        influenced: bool,
    ) -> str | None:
        """The id of a new event for `label` at `confidence` from `source_name`, or None
        when the weak label in force already says that, from that source."""
        prev = self.latest(example_id)
        if (
            prev is not None
            and prev.label == label
            and prev.source_name == source_name
            and prev.model_influenced == influenced
            and same_confidence(prev.confidence, confidence)
        ):
            return None
        act = f"after:{prev.event_id}" if prev else "first"
        return label_event_id(example_id, label, KIND, source_name, act=act)

    def withdrawals(
        self, labeled: pa.Array | pa.ChunkedArray, *, source_name: str
    ) -> tuple[list[str], list[str]]:
        """(example ids, event ids) of the withdrawals a run from `source_name` that gave
        weak labels to `labeled` (and to no other example) writes: one for every example
        with a weak label in force outside `labeled`."""
        live = [ex for ex, (_, e) in self._latest.items() if e.label is not None]
        if not live:
            return [], []
        if isinstance(labeled, pa.ChunkedArray):
            labeled = labeled.combine_chunks() if labeled.num_chunks else pa.array([], pa.string())
        kept = pc.is_in(pa.array(live, pa.string()), value_set=labeled.cast(pa.string()))
        gone = [ex for ex, keep in zip(live, kept.to_pylist(), strict=True) if not keep]
        events = [
            label_event_id(
                ex, "", KIND, source_name, act=f"withdrawn after:{self._latest[ex][1].event_id}"
            )
            for ex in gone
        ]
        return gone, events
