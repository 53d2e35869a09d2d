"""Label resolution on Arrow columns: each example's latest word from each kind of source
that can become a training label, and one training label per example.

The rules are `tasks.store.labels`'s (see `LatestLabels`); this module computes them
with sorts and group boundaries over Arrow tables, never one Python object per event:
a million weak labels are a few columns, not a million dicts. The log is read batch by
batch and reduced to the latest event of each group whenever the rows held pass twice
what the last reduction kept, so memory follows the examples labeled, not the log's
length.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.store.datasets import LABELS, SCHEMAS, Store
from tasks.store.holdout import GoldSplit
from tasks.store.labels import MODEL_KINDS

KINDS = ("human", "label_model", "model")
REDUCE_ROWS = 262_144  # log rows held before they are reduced to the latest per group

# One event as resolution reads it: the log's columns, model_influenced filled in (old
# files have none), a missing confidence read as 0 and a missing run or source as "".
EVENT_SCHEMA = pa.schema(
    [
        SCHEMAS[LABELS].field(name)
        for name in (
            "example_id", "label", "source_kind", "source_name", "confidence",
            "created_at", "event_id", "model_influenced", "run_id",
        )
    ]
)  # fmt: skip
# one training label per example: the event's columns less its time and run
RESOLVED_SCHEMA = pa.schema([f for f in EVENT_SCHEMA if f.name not in ("created_at", "run_id")])
HUMAN_SCHEMA = pa.schema(
    [("example_id", pa.string()), ("label", pa.string()), ("event_id", pa.string())]
)
# later wins; the event id breaks a tie of times deterministically
LATEST_FIRST = [("created_at", "descending"), ("event_id", "descending")]
BY_EXAMPLE = [("example_id", "ascending")]


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

    `by_kind` holds one Arrow table per kind (`EVENT_SCHEMA`, one row per example, by
    example id).
    """

    KINDS = KINDS

    def __init__(self, by_kind: dict[str, pa.Table], unresolved: dict[str, list[str]]):
        self.by_kind = by_kind
        self.unresolved = unresolved  # example -> the tied labels of its latest round

    @classmethod
    def read(
        cls, store: Store, as_of: datetime | None = None, kinds: tuple[str, ...] = KINDS
    ) -> LatestLabels:
        """From the whole log, or only the events created up to `as_of` (time travel).
        `kinds`: the source kinds to read (the others stay empty), so a reader of human
        labels alone does not read the weak labels (about one per example once weak
        labeling ran)."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown label source kinds {sorted(unknown)}; use {KINDS}")
        # human: each (example, run, source)'s latest event, the votes of the rounds
        votes = _LatestPerGroup(["example_id", "run_id", "source_name"])
        weak = _LatestPerGroup(["source_kind", "example_id"])  # label model and model
        for events in _stream_events(store, tuple(kinds), as_of):
            human = pc.equal(events.column("source_kind"), "human")
            votes.add(events.filter(human))
            weak.add(events.filter(pc.invert(human)))
        by_kind, unresolved = _decide_rounds(votes.result())
        latest = weak.result()
        for kind in ("label_model", "model"):  # withdrawn: no label
            of_kind = pc.and_(
                pc.equal(latest.column("source_kind"), kind), pc.is_valid(latest.column("label"))
            )
            by_kind[kind] = _sorted(latest.filter(of_kind), BY_EXAMPLE)
        return cls(by_kind, unresolved)

    def human_table(self, classes: Iterable[str]) -> pa.Table:
        """example_id, label, event_id of each example's latest human label, for labels
        in `classes` only, by example id."""
        human = self.by_kind["human"]
        keep = pc.is_in(human.column("label"), value_set=pa.array(list(classes), pa.string()))
        return human.filter(keep).select(HUMAN_SCHEMA.names)

    def human(self, classes: Iterable[str]) -> dict[str, tuple[str, str]]:
        """example_id -> (class name, event id) of its latest human label, for labels in
        `classes` only (a dict, for a caller holding few; `human_table` for many)."""
        table = self.human_table(classes)
        cols = (table.column(c).to_pylist() for c in HUMAN_SCHEMA.names)
        return {ex: (label, ev) for ex, label, ev in zip(*cols, strict=True)}

    def resolve(
        self,
        *,
        confidence_floor: float,
        max_model_share: float,
        leave_out: GoldSplit | None = None,
        classes: Iterable[str] | None = None,
    ) -> pa.Table:
        """One training label per example (see `resolve_labels`), by example id."""
        wanted = list(classes) if classes is not None else None
        human, weak, model = (self._usable(kind, leave_out, wanted) for kind in KINDS)
        weak = weak.filter(pc.and_(_not_in(weak, human), _reaches(weak, confidence_floor)))
        influenced = weak.column("model_influenced")
        chosen = pa.concat_tables([human, weak.filter(pc.invert(influenced))])
        capped = [weak.filter(influenced)]
        model = model.filter(
            pc.and_(
                pc.and_(_not_in(model, chosen), _not_in(model, capped[0])),
                _reaches(model, confidence_floor),
            )
        )
        capped.append(model)
        top = _most_confident(pa.concat_tables(capped), max_model_share, chosen.num_rows)
        out = _sorted(pa.concat_tables([chosen, top]), BY_EXAMPLE)
        return out.select(RESOLVED_SCHEMA.names).cast(RESOLVED_SCHEMA).combine_chunks()

    def _usable(
        self, kind: str, leave_out: GoldSplit | None, classes: list[str] | None
    ) -> pa.Table:
        """`kind`'s labels less those outside `classes` and the examples `leave_out`
        holds (gold)."""
        table = self.by_kind[kind]
        if classes is not None:
            wanted = pa.array(classes, pa.string())
            table = table.filter(pc.is_in(table.column("label"), value_set=wanted))
        if leave_out is not None and table.num_rows:
            table = table.filter(pa.array(~leave_out.is_gold(table.column("example_id"))))
        return table


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


# -- reading and reducing ---------------------------------------------------------------------


def _stream_events(
    store: Store, kinds: tuple[str, ...], as_of: datetime | None
) -> Iterator[pa.Table]:
    """The log's events of `kinds` created up to `as_of` (all of them without), batch by
    batch, as `EVENT_SCHEMA` tables."""
    flt = pc.field("source_kind").isin(pa.array(list(kinds)))
    if as_of is not None:
        flt = flt & (pc.field("created_at") <= pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
    for batch in store.iter_batches(LABELS, EVENT_SCHEMA.names, filter=flt):
        kind = batch.column("source_kind")
        flag = batch.column("model_influenced")
        by_kind = pc.is_in(kind, value_set=pa.array(MODEL_KINDS, pa.string()))
        columns = {
            **{name: batch.column(name) for name in EVENT_SCHEMA.names},
            "confidence": pc.fill_null(batch.column("confidence"), 0.0),
            "model_influenced": pc.if_else(pc.is_null(flag), by_kind, flag),
            "source_name": pc.fill_null(batch.column("source_name"), ""),
            "run_id": pc.fill_null(batch.column("run_id"), ""),
        }
        yield pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)


class _LatestPerGroup:
    """The latest event of each group of `keys` over tables added one at a time. What is
    held is reduced to one row per group whenever it passes twice the rows the last
    reduction kept (at least `REDUCE_ROWS`)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.tables: list[pa.Table] = []
        self.held = 0
        self.due = REDUCE_ROWS

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.tables.append(table)
        self.held += table.num_rows
        if self.held > self.due:
            reduced = self.result()
            self.tables, self.held = [reduced], reduced.num_rows
            self.due = max(REDUCE_ROWS, 2 * self.held)

    def result(self) -> pa.Table:
        if not self.tables:
            return EVENT_SCHEMA.empty_table()
        order = [(k, "ascending") for k in self.keys] + LATEST_FIRST
        table = _sorted(pa.concat_tables(self.tables), order)
        return table.take(pa.array(np.flatnonzero(_group_starts(table, self.keys))))


def _decide_rounds(votes: pa.Table) -> tuple[dict[str, pa.Table], dict[str, list[str]]]:
    """Each example's human label from its latest round of votes (`votes`: the latest
    event of each example, run and source), and the examples whose latest round tied,
    with its labels. The latest round is the run of the example's latest vote."""
    votes = _sorted(votes, BY_EXAMPLE + LATEST_FIRST)
    starts = _group_starts(votes, ["example_id"])
    first = np.flatnonzero(starts)
    round_run = votes.column("run_id").take(pa.array(first[np.cumsum(starts) - 1]))
    votes = votes.filter(pc.equal(votes.column("run_id"), round_run))  # latest round only
    first = np.flatnonzero(_group_starts(votes, ["example_id"]))
    sizes = np.diff(np.append(first, votes.num_rows))
    winners = [first[sizes == 1]]  # one vote: it wins
    unresolved: dict[str, list[str]] = {}
    for start, size in zip(first[sizes > 1], sizes[sizes > 1], strict=True):
        labels = votes.column("label").slice(start, size).to_pylist()
        counts = Counter(labels)
        best = max(counts.values())
        top = [label for label, n in counts.items() if n == best]
        if len(top) > 1:
            unresolved[votes.column("example_id")[start].as_py()] = sorted(set(labels))
        else:  # the winning label's latest vote (votes run latest first)
            winners.append(np.array([start + labels.index(top[0])]))
    rows = np.sort(np.concatenate(winners)) if winners else np.zeros(0, np.int64)
    return {"human": votes.take(pa.array(rows, pa.int64()))}, unresolved


def _most_confident(influenced: pa.Table, max_model_share: float, n_chosen: int) -> pa.Table:
    """The model-influenced labels that fit under `max_model_share` beside `n_chosen`
    other labels, most confident first (ties by example id)."""
    if max_model_share >= 1.0:
        return influenced
    cap = int(max_model_share / (1.0 - max_model_share) * n_chosen)
    return _sorted(influenced, [("confidence", "descending"), *BY_EXAMPLE]).slice(0, cap)


# -- small column helpers ------------------------------------------------------------------


def _sorted(table: pa.Table, keys: list[tuple[str, str]]) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=keys)).combine_chunks()


def _group_starts(table: pa.Table, keys: list[str]) -> np.ndarray:
    """(N,) bool: where a row's `keys` differ from the row before's (the first row is a
    start), in a table sorted by `keys`."""
    n = table.num_rows
    starts = np.zeros(n, bool)
    if not n:
        return starts
    starts[0] = True
    for key in keys:
        col = table.column(key)
        changed = pc.not_equal(col.slice(1), col.slice(0, n - 1))
        starts[1:] |= changed.to_numpy(zero_copy_only=False)
    return starts


def _not_in(table: pa.Table, other: pa.Table) -> pa.Array:
    """Per row of `table`: whether its example is not in `other`."""
    ids = other.column("example_id").combine_chunks()
    return pc.invert(pc.is_in(table.column("example_id"), value_set=ids))


def _reaches(table: pa.Table, floor: float) -> pa.Array:
    """Per row: whether its confidence (float32, compared as float64) reaches `floor`."""
    return pc.greater_equal(pc.cast(table.column("confidence"), pa.float64()), floor)
