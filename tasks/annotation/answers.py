"""People's answers, from any tool, into the label log: one `human` event per act of
labeling, every answer kept (several annotators per example are normal), rows that
cannot be used quarantined one by one with the reason, and the annotators' agreement.

An answer's event id comes from the tool's own id for the act (a Label Studio
annotation id and its update time: an updated annotation is a new event, a re-import of
the same export writes nothing twice); answers without one (a CSV without a timestamp)
are new only when what that annotator says about the example changed. Answer times are
UTC (a time without a zone is taken as UTC); an answer nobody signed is `unknown`'s.

A tie is not an answer: the example goes back to the request queue, with the tie shown
(`tasks.sampling.requests`), until a later round settles it.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from configs.data import TaxonomyConfig
from tasks.store import (
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SCHEMAS,
    SourceEvent,
    SourceLog,
    Store,
    label_event_id,
    utcnow,
)

log = logging.getLogger(__name__)

UNKNOWN_ANNOTATOR = "unknown"  # who answered, when the answer does not say


@dataclass(frozen=True)
class Answer:
    example_id: str
    label: str
    annotator: str
    tool: str  # label_studio | csv | simulated
    origin: str  # where it came from, for a person: "export.json task 12 annotation 5"
    act: str | None = None  # the tool's own id for this act of labeling, if it has one
    answered_at: datetime | None = None  # UTC; a time without a zone is taken as UTC
    formerly: tuple[str, ...] = ()  # names earlier imports gave this annotator (user7)

    def __post_init__(self) -> None:
        # the label log's times carry a zone; a naive one could not be compared with them
        if self.answered_at is not None and self.answered_at.tzinfo is None:
            object.__setattr__(self, "answered_at", self.answered_at.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Rejected:
    """A row that cannot become a label, with why: it goes to quarantine."""

    origin: str
    reason: str  # unknown_example | label_not_in_taxonomy | malformed
    detail: str
    example_id: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Agreement:
    """Krippendorff's alpha (nominal) over examples with two or more annotators."""

    alpha: float  # NaN when fewer than two annotated twice
    per_class: dict[str, float]  # one class against the rest
    examples: int  # examples with at least two answers
    ties: list[str]  # examples whose answers tie for the most votes: asked again

    def rows(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = [
            {"metric": "examples with 2+ annotators", "value": self.examples},
            {"metric": "agreement (Krippendorff's alpha)", "value": _r(self.alpha)},
        ]
        out += [
            {"metric": f"  alpha: class {c}", "value": _r(a)} for c, a in self.per_class.items()
        ]
        out.append({"metric": "ties (asked again)", "value": len(self.ties)})
        return out


def _r(x: float) -> object:
    return "n/a" if x != x else round(x, 4)


@dataclass(frozen=True)
class ImportSummary:
    tool: str
    run_id: str
    answers: int
    events_written: int
    already_present: int
    skipped: int  # cancelled / skipped in the tool: dropped, counted
    quarantined: dict[str, int]
    agreement: Agreement
    annotators: list[str] = field(default_factory=list)
    blank: int = 0  # CSV rows whose label is still blank: not answered yet

    def rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [
            {"metric": "answers read", "value": self.answers},
            {"metric": "label events written", "value": self.events_written},
            {"metric": "label events already present", "value": self.already_present},
        ]
        if self.tool != "csv" or self.skipped:  # a CSV has no skips, only blanks
            rows.append({"metric": "skipped or cancelled (dropped)", "value": self.skipped})
        if self.tool == "csv" or self.blank:
            rows.append({"metric": "blank labels (not answered yet)", "value": self.blank})
        rows.append({"metric": "quarantined", "value": sum(self.quarantined.values())})
        rows += [
            {"metric": f"  quarantined: {k}", "value": n}
            for k, n in sorted(self.quarantined.items())
        ]
        rows.append({"metric": "annotators", "value": ", ".join(self.annotators) or "—"})
        return rows + self.agreement.rows()


def krippendorff_alpha(units: list[list[str]]) -> float:
    """Nominal Krippendorff's alpha of units, each the labels it received (units with
    fewer than two are not pairable and are ignored). 1: perfect agreement, 0: chance."""
    units = [u for u in units if len(u) >= 2]
    cats = sorted({c for u in units for c in u})
    if not units or len(cats) < 2:
        return 1.0 if units else float("nan")
    index = {c: i for i, c in enumerate(cats)}
    o = np.zeros((len(cats), len(cats)))  # the coincidence matrix
    for u in units:
        m = len(u)
        counts = np.bincount([index[c] for c in u], minlength=len(cats)).astype(float)
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = o.sum(1)
    n = n_c.sum()
    off = ~np.eye(len(cats), dtype=bool)
    expected = (np.outer(n_c, n_c)[off]).sum()
    return float(1.0 - (n - 1) * o[off].sum() / expected) if expected else 1.0


def agreement(answers: list[Answer], classes: tuple[str, ...]) -> Agreement:
    """Agreement of this batch of answers: each annotator's latest answer per example."""
    per_example: dict[str, dict[str, str]] = defaultdict(dict)
    for a in sorted(answers, key=lambda a: (a.answered_at or datetime.min).isoformat()):
        per_example[a.example_id][a.annotator] = a.label
    units = [list(v.values()) for v in per_example.values() if len(v) >= 2]
    ties = []
    for ex, votes in per_example.items():
        if len(votes) >= 2:
            top = Counter(votes.values()).most_common()
            if len(top) > 1 and top[0][1] == top[1][1]:
                ties.append(ex)
    per_class = {
        c: krippendorff_alpha([[str(label == c) for label in u] for u in units])
        for c in classes
        if any(c in u for u in units)
    }
    return Agreement(krippendorff_alpha(units), per_class, len(units), sorted(ties))


def _quarantine_rows(rejected: list[Rejected], tool: str, run_id: str, now: datetime) -> pa.Table:
    rows = [
        {
            "quarantine_id": hashlib.sha256(
                f"{r.origin}|{r.reason}|{r.label}".encode()
            ).hexdigest()[:32],
            "record_kind": "label",
            "reason": r.reason,
            "detail": r.detail,
            "source": tool,
            "source_uri": r.origin,
            "example_id": r.example_id,
            "label": r.label,
            "data": None,
            "quarantined_at": now,
            "run_id": run_id,
        }
        for r in rejected
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMAS[QUARANTINE])


def import_answers(
    store: Store,
    answers: list[Answer],
    rejected: list[Rejected],
    taxonomy: TaxonomyConfig,
    *,
    tool: str,
    run_id: str,
    skipped: int = 0,
    blank: int = 0,
) -> ImportSummary:
    """Validate answers (known example, class in the taxonomy), write one `human` event
    per new act of labeling, quarantine the rest with their reasons. The answers of one
    call are one round: the store settles an example by their majority; a tie sends it
    back to the request queue. `skipped` (skipped or cancelled in the tool) and `blank`
    (CSV rows without a label yet) are only counted."""
    now = utcnow()
    known_examples = store.column_set(EXAMPLES, "example_id")
    good, rejected = _check_answers(answers, rejected, known_examples, taxonomy)
    for r in rejected[:20]:
        log.warning("quarantined answer %s: %s", r.origin, r.detail)
    stamp = _Stamp(tool, run_id, taxonomy.version, now)
    with store.commit_lock() as lease:
        events = _new_label_events(store, good, stamp)
        quarantine = _new_quarantine_rows(store, rejected, stamp)
        lease.check()
        store.write(LABELS, events.table, when=now)
        store.write(QUARANTINE, quarantine, when=now)
    return ImportSummary(
        tool=tool,
        run_id=run_id,
        answers=len(answers),
        events_written=events.table.num_rows,
        already_present=events.already_present,
        skipped=skipped,
        blank=blank,
        quarantined=dict(Counter(r.reason for r in rejected)),
        agreement=agreement(good, taxonomy.classes),
        annotators=sorted({a.annotator for a in good}),
    )


def _check_answers(
    answers: list[Answer],
    rejected: list[Rejected],
    known_examples: set[str],
    taxonomy: TaxonomyConfig,
) -> tuple[list[Answer], list[Rejected]]:
    """(the answers that can become labels, every rejected row): `rejected`, then the
    answers about an example not in the store or with a label not in the taxonomy."""
    rejected = list(rejected)
    good: list[Answer] = []
    for a in answers:
        if a.example_id not in known_examples:
            rejected.append(
                Rejected(
                    a.origin,
                    "unknown_example",
                    f"example id {a.example_id!r} is not in the store: was the task made "
                    "from another store?",
                    a.example_id,
                    a.label,
                )
            )
        elif a.label not in taxonomy.classes:
            rejected.append(
                Rejected(
                    a.origin,
                    "label_not_in_taxonomy",
                    f"label {a.label!r} is not one of taxonomy.classes ({taxonomy.version})",
                    a.example_id,
                    a.label,
                )
            )
        else:
            good.append(a)
    return good, rejected


@dataclass(frozen=True)
class _Stamp:
    """What every row of one import records: the tool, the run, the taxonomy, the time."""

    tool: str
    run_id: str
    taxonomy_version: str
    now: datetime


@dataclass(frozen=True)
class _NewEvents:
    table: pa.Table  # the label events to write
    already_present: int  # answers the label log has already


def _new_label_events(store: Store, good: list[Answer], stamp: _Stamp) -> _NewEvents:
    """One `human` event per answer the label log does not have yet, in answer order."""
    logs: dict[str, SourceLog] = {}
    rows: list[dict[str, object]] = []
    present = 0
    for a in good:
        source = f"{stamp.tool}:{a.annotator}"
        former = [f"{stamp.tool}:{name}" for name in a.formerly]
        for src in (source, *former):
            if src not in logs:
                logs[src] = SourceLog.read(store, "human", src)
        event_id = _new_event_id(a, source, former, logs)
        if event_id is None:
            present += 1
            continue
        at = a.answered_at or stamp.now
        logs[source].record(a.example_id, SourceEvent(event_id, a.label, 1.0), (at, event_id))
        rows.append(
            {
                "event_id": event_id,
                "example_id": a.example_id,
                "label": a.label,
                "source_kind": "human",
                "source_name": source,
                "confidence": 1.0,
                "created_at": at,
                "run_id": stamp.run_id,
                "taxonomy_version": stamp.taxonomy_version,
                "model_influenced": False,
            }
        )
    return _NewEvents(pa.Table.from_pylist(rows, schema=SCHEMAS[LABELS]), present)


def _new_event_id(
    a: Answer, source: str, former: list[str], logs: dict[str, SourceLog]
) -> str | None:
    """The event id of answer `a` by `source`, or None when the label log has it already
    (under this name, or for the same act under one of the annotator's `former` names)."""
    slog = logs[source]
    if a.act is not None:
        event_id = label_event_id(a.example_id, a.label, "human", source, act=a.act)
        # the same act, imported before under the annotator's former name
        seen = any(
            label_event_id(a.example_id, a.label, "human", src, act=a.act) in logs[src].event_ids
            for src in former
        )
    else:
        event_id, seen = slog.next_event(a.example_id, a.label), False
    if event_id is None or event_id in slog.event_ids or seen:
        return None
    return event_id


def _new_quarantine_rows(store: Store, rejected: list[Rejected], stamp: _Stamp) -> pa.Table:
    """The quarantine rows of `rejected` not quarantined yet (a re-import adds none twice)."""
    quarantine = _quarantine_rows(rejected, stamp.tool, stamp.run_id, stamp.now)
    seen = store.column_set(QUARANTINE, "quarantine_id")
    new = [i for i, q in enumerate(quarantine.column(0).to_pylist()) if q not in seen]
    return quarantine.take(pa.array(new, pa.int64()))
