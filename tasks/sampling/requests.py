"""Annotation requests: what sampling asked people to label, append-only in the store.

A request is answered when a `human` label event on its example is newer than the
request; every other request is open (the backlog). An example with a human label or
an open request is never requested again, except by the `review` stream, whose point is
to have existing labels looked at again.

A tie is a request for another opinion. When the latest round of human answers on an
example ties for the most votes (the rounds and their majority as in
`tasks.store.LatestLabels`), the example has no human label, and the queue holds a
request for it (strategy `tie`, in the stream it was first asked in, `review` if it was
never asked) that shows the tie, e.g. "tied: cat 1, dog 1". It is derived from the
label log, not stored: it stays open until a later round settles the example, and a
round that ties again asks again (a new request id, so Label Studio gets it once).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from tasks.store import ANNOTATION_REQUESTS, LABELS, SCHEMAS, Store, utcnow

STREAMS = ("train", "gold", "review")
TIE_STRATEGY = "tie"  # the strategy of a request made because the annotators tied


@dataclass(frozen=True)
class Request:
    example_id: str
    stream: str
    strategy: str
    score: float
    model_version: str
    suggestion: str | None = None  # train: the model's class; review: the current label
    suggestion_confidence: float | None = None

    def request_id(self, batch_id: str) -> str:
        key = f"{self.example_id}|{self.stream}|{batch_id}"
        return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Tie:
    """An example whose latest round of human answers tied for the most votes."""

    example_id: str
    votes: tuple[tuple[str, int], ...]  # (label, annotators who chose it), most first
    run_id: str  # the round: the run that wrote its answers
    at: datetime  # the round's latest answer
    event_id: str  # that answer's event: with run_id, names this tie

    def text(self) -> str:
        return "tied: " + ", ".join(f"{label} {n}" for label, n in self.votes)

    def request(self, stream: str) -> dict:
        """The open request this tie puts back in the queue (a row of
        annotation_requests, plus the tie to show)."""
        key = f"{self.example_id}|{TIE_STRATEGY}|{self.run_id}|{self.event_id}"
        return {
            "request_id": hashlib.sha256(key.encode()).hexdigest()[:24],
            "example_id": self.example_id,
            "stream": stream,
            "strategy": TIE_STRATEGY,
            "score": 1.0,
            "model_version": "none",
            "suggestion": None,  # nothing may tip the balance
            "suggestion_confidence": None,
            "run_id": self.run_id,
            "batch_id": f"{TIE_STRATEGY}-{self.run_id}",
            "created_at": self.at,
            "tie": self.text(),
        }


def _latest_round_ties(
    events: Iterable[tuple[str, str, str, datetime, str, str]],
) -> dict[str, Tie]:
    """example -> Tie, from human events (example, label, source, time, event id, run).
    A round is the events one run wrote; the round with the latest event decides; in it
    each source's latest answer is one vote (as `tasks.store.LatestLabels` reads them)."""
    rounds: dict[str, dict[str, dict[str, tuple[tuple, str]]]] = {}
    for ex, label, source, ts, ev, run in events:
        votes = rounds.setdefault(ex, {}).setdefault(run, {})
        if source not in votes or (ts, ev) > votes[source][0]:
            votes[source] = ((ts, ev), label)
    ties: dict[str, Tie] = {}
    for ex, by_run in rounds.items():
        run, votes = max(by_run.items(), key=lambda rv: max(k for k, _ in rv[1].values()))
        counts = Counter(label for _, label in votes.values()).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            (at, ev) = max(k for k, _ in votes.values())
            ordered = tuple(sorted(counts, key=lambda c: (-c[1], c[0])))
            ties[ex] = Tie(ex, ordered, run, at, ev)
    return ties


@dataclass(frozen=True)
class RequestLog:
    """The requests in the store, when each example was first labeled by a human after
    them, and the examples whose annotators tied (asked again)."""

    requests: list[dict]  # rows of annotation_requests
    answered_at: dict[str, datetime | None]  # request_id -> first human answer after it
    human_labeled: frozenset[str]  # examples with any human label event
    ties: dict[str, Tie] = field(default_factory=dict)  # example -> its unsettled tie

    @classmethod
    def read(cls, store: Store) -> RequestLog:
        requests = (
            store.read(ANNOTATION_REQUESTS).to_pylist() if store.files(ANNOTATION_REQUESTS) else []
        )
        cols = ["example_id", "label", "source_name", "created_at", "event_id", "run_id"]
        human_times: dict[str, list[datetime]] = {}
        events = []
        for batch in store.iter_batches(LABELS, cols, filter=pc.field("source_kind") == "human"):
            rows = list(zip(*(batch.column(c).to_pylist() for c in cols), strict=True))
            for ex, _, _, ts, _, _ in rows:
                human_times.setdefault(ex, []).append(ts)
            events += rows
        answered: dict[str, datetime | None] = {}
        for r in requests:
            after = [t for t in human_times.get(r["example_id"], []) if t > r["created_at"]]
            answered[r["request_id"]] = min(after) if after else None
        return cls(requests, answered, frozenset(human_times), _latest_round_ties(events))

    def open_requests(self) -> list[dict]:
        """Requests not answered yet, then a request for each tie no open request covers;
        each row's `tie` shows the tie on its example (None when there is none)."""
        rows = [r for r in self.requests if self.answered_at[r["request_id"]] is None]
        waiting = {r["example_id"] for r in rows}
        shown = [{**r, "tie": self._tie_text(r["example_id"])} for r in rows]
        first_stream: dict[str, str] = {}
        for r in sorted(self.requests, key=lambda r: r["created_at"], reverse=True):
            first_stream[r["example_id"]] = r["stream"]
        return shown + [
            tie.request(first_stream.get(ex, "review"))
            for ex, tie in sorted(self.ties.items())
            if ex not in waiting
        ]

    def _tie_text(self, example_id: str) -> str | None:
        tie = self.ties.get(example_id)
        return tie.text() if tie else None

    def blocked(self, stream: str) -> set[str]:
        """Examples a new request of `stream` must skip."""
        if stream == "review":  # re-checking labels is the point; only not twice at once
            return {r["example_id"] for r in self.open_requests() if r["stream"] == "review"}
        return set(self.human_labeled) | {r["example_id"] for r in self.open_requests()}

    def backlog(self, now: datetime | None = None) -> Backlog:
        now = now or utcnow()
        open_by: dict[str, list[float]] = {s: [] for s in STREAMS}
        for r in self.open_requests():
            open_by.setdefault(r["stream"], []).append((now - r["created_at"]).total_seconds())
        latencies = [
            (t - r["created_at"]).total_seconds()
            for r in self.requests
            if (t := self.answered_at[r["request_id"]]) is not None
        ]
        return Backlog(
            open={s: len(a) for s, a in open_by.items()},
            oldest_age_s={s: max(a) for s, a in open_by.items() if a},
            median_age_s={s: statistics.median(a) for s, a in open_by.items() if a},
            answered=len(latencies),
            median_latency_s=statistics.median(latencies) if latencies else None,
        )


@dataclass(frozen=True)
class Backlog:
    open: dict[str, int]  # stream -> open requests
    oldest_age_s: dict[str, float] = field(default_factory=dict)
    median_age_s: dict[str, float] = field(default_factory=dict)
    answered: int = 0
    median_latency_s: float | None = None  # request -> first human answer

    def rows(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for s, n in self.open.items():
            age = self.oldest_age_s.get(s)
            out.append(
                {
                    "metric": f"open requests: {s}",
                    "value": f"{n}" + (f" (oldest {_hours(age)})" if age is not None else ""),
                }
            )
        out.append({"metric": "requests answered", "value": self.answered})
        out.append(
            {
                "metric": "median time to answer",
                "value": _hours(self.median_latency_s) if self.median_latency_s else "—",
            }
        )
        return out


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def write_requests(
    store: Store, requests: Iterable[Request], *, run_id: str, batch_id: str
) -> list[dict]:
    """Record `requests` (one batch), skipping any example another sampler requested in
    the meantime; returns the rows written. Committed under the store's lease."""
    now = utcnow()
    with store.commit_lock() as lease:
        log = RequestLog.read(store)
        rows = []
        taken: dict[str, set[str]] = {s: log.blocked(s) for s in STREAMS}
        for req in requests:
            if req.example_id in taken[req.stream]:
                continue
            for s in STREAMS:  # one request per example per batch, whatever the stream
                if s != "review":
                    taken[s].add(req.example_id)
            taken["review"].add(req.example_id)
            rows.append(
                {
                    "request_id": req.request_id(batch_id),
                    "example_id": req.example_id,
                    "stream": req.stream,
                    "strategy": req.strategy,
                    "score": float(req.score),
                    "model_version": req.model_version,
                    "suggestion": req.suggestion,
                    "suggestion_confidence": req.suggestion_confidence,
                    "run_id": run_id,
                    "batch_id": batch_id,
                    "created_at": now,
                }
            )
        lease.check()
        store.write(
            ANNOTATION_REQUESTS,
            pa.Table.from_pylist(rows, schema=SCHEMAS[ANNOTATION_REQUESTS]),
            when=now,
        )
    return rows
