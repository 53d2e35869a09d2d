"""The request queue on a real store: a tie among annotators is a request for another
opinion, open until a later round settles the example."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from tasks.sampling.requests import Request, RequestLog, write_requests
from tasks.store import EXAMPLES, LABELS, SCHEMAS, LatestLabels, Store
from tests.conftest import label_events

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _examples(store: Store, ids: list[str]) -> None:
    store.write(
        EXAMPLES,
        pa.Table.from_pylist(
            [
                {
                    "example_id": i,
                    "image": b"",
                    "height": 1,
                    "width": 1,
                    "channels": 1,
                    "source": "t",
                    "source_uri": f"mem://{i}",
                    "ingested_at": T0,
                }
                for i in ids
            ],
            schema=SCHEMAS[EXAMPLES],
        ),
    )


def _votes(store: Store, run: str, at: datetime, votes: list[tuple[str, str, str]]) -> None:
    """One round of human answers: (example, label, annotator) each."""
    store.write(
        LABELS,
        label_events(
            [
                {
                    "event_id": f"{run}-{ex}-{who}",
                    "example_id": ex,
                    "label": label,
                    "source_name": f"csv:{who}",
                    "created_at": at,
                    "run_id": run,
                }
                for ex, label, who in votes
            ]
        ),
    )


def test_a_tie_is_an_open_request_for_another_opinion(store_root):
    store = Store(store_root)
    _examples(store, ["a", "b", "c"])
    write_requests(
        store,
        [Request(e, "gold", "uniform", 1.0, "none") for e in ("a", "b")],
        run_id="sample-1",
        batch_id="batch-1",
    )
    (asked,) = {r["created_at"] for r in RequestLog.read(store).requests}
    t1 = asked + timedelta(minutes=5)
    _votes(
        store,
        "imp-1",
        t1,
        [
            ("a", "cat", "ann-1"),
            ("a", "cat", "ann-2"),
            ("b", "cat", "ann-1"),
            ("b", "dog", "ann-2"),
            ("c", "dog", "ann-1"),  # tied too, and never requested: asked for review
            ("c", "cat", "ann-2"),
            ("c", "bird", "ann-3"),
        ],
    )
    assert set(LatestLabels.read(store).unresolved) == {"b", "c"}

    log = RequestLog.read(store)
    tied = {r["example_id"]: r for r in log.open_requests()}
    assert set(tied) == {"b", "c"}
    assert tied["b"]["tie"] == "tied: cat 1, dog 1"
    assert tied["c"]["tie"] == "tied: bird 1, cat 1, dog 1"
    assert (tied["b"]["stream"], tied["c"]["stream"]) == ("gold", "review")  # as first asked
    assert tied["b"]["strategy"] == "tie" and tied["b"]["suggestion"] is None
    assert tied["b"]["created_at"] == t1  # waiting since the tie
    assert tied["b"]["request_id"] not in {r["request_id"] for r in log.requests}
    # the same tie read again is the same request (so Label Studio gets it once)
    assert {r["request_id"] for r in RequestLog.read(store).open_requests()} == {
        r["request_id"] for r in tied.values()
    }
    backlog = log.backlog(now=t1 + timedelta(hours=2))
    assert (backlog.open["gold"], backlog.open["review"]) == (1, 1)
    assert log.blocked("train") >= {"b", "c"}  # not sampled again while it waits

    # another opinion on b (a later round) settles it; c waits on
    _votes(store, "imp-2", t1 + timedelta(hours=1), [("b", "dog", "ann-3")])
    assert [r["example_id"] for r in RequestLog.read(store).open_requests()] == ["c"]
    # a later round that ties again is asked again, with the new tie shown
    _votes(
        store,
        "imp-3",
        t1 + timedelta(hours=2),
        [("b", "cat", "ann-4"), ("b", "cat", "ann-5"), ("b", "dog", "ann-6"), ("b", "dog", "x")],
    )
    tied = {r["example_id"]: r for r in RequestLog.read(store).open_requests()}
    assert tied["b"]["tie"] == "tied: cat 2, dog 2"


def test_review_may_ask_about_labeled_examples_again(store_cfg):
    store = Store(store_cfg.store.root)
    log = RequestLog.read(store)
    assert log.blocked("review") == set()  # human labels do not block a review
    assert log.blocked("train") >= set(LatestLabels.read(store).human(store_cfg.taxonomy.classes))
