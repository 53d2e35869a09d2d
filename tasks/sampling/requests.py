"""Annotation requests: what sampling asked people to label, append-only in the store.

A request is answered when a `human` label event on its example is newer than the
request; every other request is open (the backlog). An example with a human label or
an open request is never requested again, except by the `review` stream, whose point is
to have existing labels looked at again.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from tasks.store import ANNOTATION_REQUESTS, LABELS, SCHEMAS, Store, utcnow

STREAMS = ("train", "gold", "review")


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
class RequestLog:
    """The requests in the store and when each example was first labeled by a human
    after them."""

    requests: list[dict]  # rows of annotation_requests
    answered_at: dict[str, datetime | None]  # request_id -> first human answer after it
    human_labeled: frozenset[str]  # examples with any human label event

    @classmethod
    def read(cls, store: Store) -> RequestLog:
        requests = (
            store.read(ANNOTATION_REQUESTS).to_pylist() if store.files(ANNOTATION_REQUESTS) else []
        )
        human_times: dict[str, list[datetime]] = {}
        for batch in store.iter_batches(
            LABELS, ["example_id", "created_at"], filter=pc.field("source_kind") == "human"
        ):
            for ex, ts in zip(
                batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
            ):
                human_times.setdefault(ex, []).append(ts)
        answered: dict[str, datetime | None] = {}
        for r in requests:
            after = [t for t in human_times.get(r["example_id"], []) if t > r["created_at"]]
            answered[r["request_id"]] = min(after) if after else None
        return cls(requests, answered, frozenset(human_times))

    def open_requests(self) -> list[dict]:
        return [r for r in self.requests if self.answered_at[r["request_id"]] is None]

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
