"""Fixtures of the label-health tests: a hand-built store whose every SLI is known, and
real digit images for the drift checks."""

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.images.decode import decode_images
from tasks.ingest import mnist5k_pngs
from tasks.sampling.requests import Request, write_requests
from tasks.store import DEV, EXAMPLES, LABELS, SCHEMAS, GoldSplit, Store
from tests.conftest import label_events

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SPLIT = GoldSplit(0.2, "gold-v1", 0.5)


def _ids(part: str, n: int) -> list[str]:
    """n example ids that fall in the given gold part ("" = not gold)."""
    out, i = [], 0
    while len(out) < n:
        ex = hashlib.sha256(f"x{i}".encode()).hexdigest()
        if SPLIT.parts([ex])[0] == part:
            out.append(ex)
        i += 1
    return out


@pytest.fixture
def hand_store(store_root):
    """10 examples outside gold, 2 in gold dev, all ingested 48 h before NOW:
    - a0..a3: human labels (class 0, 0, 1, 1), labeled 24 h after ingest (age 24 h);
    - a4: a label-model label (class 1, 0.9), model-influenced, labeled 36 h after ingest;
    - a5: a plain label-model label (class 0, 0.95), labeled 36 h after ingest;
    - a6..a9: unlabeled;
    - g0, g1: gold dev, human truth "0" and "1" from `folder`, labeled at ingest; a second
      annotator says "0" for both: right on g0, wrong on g1.
    Two open train requests."""
    store = Store(store_root)
    a = _ids("", 10)
    g = _ids(DEV, 2)
    t_ingest = NOW - timedelta(hours=48)
    store.write(
        EXAMPLES,
        pa.Table.from_pylist(
            [
                {
                    "example_id": e,
                    "image": b"x",
                    "height": 1,
                    "width": 1,
                    "channels": 1,
                    "source": "t",
                    "source_uri": e,
                    "ingested_at": t_ingest,
                    "run_id": "i1",
                }
                for e in a + g
            ],
            schema=SCHEMAS[EXAMPLES],
        ),
    )
    ev = []
    for i, label in enumerate(["0", "0", "1", "1"]):
        ev.append(
            {
                "event_id": f"h{i}",
                "example_id": a[i],
                "label": label,
                "source_name": "folder",
                "created_at": t_ingest + timedelta(hours=24),
                "run_id": "i1",
            }
        )
    ev.append(
        {
            "event_id": "lm4",
            "example_id": a[4],
            "label": "1",
            "source_kind": "label_model",
            "source_name": "dawid_skene:x",
            "confidence": 0.9,
            "model_influenced": True,
            "created_at": t_ingest + timedelta(hours=36),
            "run_id": "w1",
        }
    )
    ev.append(
        {
            "event_id": "lm5",
            "example_id": a[5],
            "label": "0",
            "source_kind": "label_model",
            "source_name": "dawid_skene:x",
            "confidence": 0.95,
            "model_influenced": False,
            "created_at": t_ingest + timedelta(hours=36),
            "run_id": "w1",
        }
    )
    for i, label in enumerate(["0", "1"]):
        ev.append(
            {
                "event_id": f"g{i}",
                "example_id": g[i],
                "label": label,
                "source_name": "folder",
                "created_at": t_ingest,
                "run_id": "i1",
            }
        )
        ev.append(
            {
                "event_id": f"b{i}",
                "example_id": g[i],
                "label": "0",
                "source_name": "label_studio:bob",
                "created_at": t_ingest - timedelta(hours=1),
                "run_id": "ls1",
            }
        )
    store.write(LABELS, label_events(ev))
    # the latest weak-labeling run's label matrix: two functions over g0, g1 and a0
    matrix = Path(store.base) / "label_matrices" / "run=w1"
    matrix.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "example_id": [g[0], g[1], a[0]],
                "lf_a": pa.array([0, 1, 0], pa.int16()),
                "lf_b": pa.array([1, 1, -1], pa.int16()),
            }
        ),
        matrix / "part-00000.parquet",
    )
    write_requests(
        store,
        [
            Request(a[6], "train", "margin", 0.5, "m@v1"),
            Request(a[7], "train", "margin", 0.4, "m@v1"),
        ],
        run_id="s1",
        batch_id="b1",
    )
    return store, a, g


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    pngs, _ = mnist5k_pngs()  # ordered by class: draw a random subset
    pick = np.random.default_rng(0).permutation(len(pngs))[:1200]
    return decode_images([pngs[i] for i in pick], 28, 1)  # (1200, 1, 28, 28) uint8


CLASSES = ("0", "1", "2")


@pytest.fixture
def mixed_store(store_root):
    """300 examples (one stored twice, the later ingest counting) and a label log of every
    kind: folder labels, annotators who agree, disagree and tie (gold included), a human
    label outside the taxonomy, label-model labels (some model-influenced, some
    withdrawn), model predictions, a labeling function's events; equal times among one
    source's answers; a label matrix of four functions; open requests in two streams."""
    rng = np.random.default_rng(7)
    store = Store(store_root)
    ids = [hashlib.sha256(f"m{i}".encode()).hexdigest() for i in range(300)]
    t0 = NOW - timedelta(days=10)
    ingested = [t0 + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 5, len(ids))]
    rows = [(e, t) for e, t in zip(ids, ingested, strict=True)] + [(ids[0], t0 + timedelta(days=6))]
    store.write(
        EXAMPLES,
        pa.Table.from_pylist(
            [
                {"example_id": e, "image": b"x", "height": 1, "width": 1, "channels": 1}
                | {"source": "t", "source_uri": e, "ingested_at": t, "run_id": "i1"}
                for e, t in rows
            ],
            schema=SCHEMAS[EXAMPLES],
        ),
    )
    events: list[dict] = []

    def add(ex: str, label: str | None, kind: str, name: str, at: datetime, **kw) -> None:
        events.append(
            {"event_id": f"e{len(events)}", "example_id": ex, "label": label}
            | {"source_kind": kind, "source_name": name, "created_at": at}
            | kw
        )

    for i, ex in enumerate(ids):
        at = ingested[i] + timedelta(minutes=int(rng.integers(-120, 60 * 24 * 3)))
        label = CLASSES[int(rng.integers(0, 3))]
        r = rng.random()
        if r < 0.35:
            add(ex, label, "human", "folder", at, run_id="i1")
            for who in ("label_studio:bob", "label_studio:amy")[: int(rng.integers(0, 3))]:
                said = CLASSES[int(rng.integers(0, 3))] if rng.random() < 0.4 else label
                later = at + timedelta(hours=int(rng.integers(0, 3)))  # 0: equal times
                add(ex, said, "human", who, later, run_id="ls1")
                if rng.random() < 0.3:  # the same annotator again, as new
                    add(ex, CLASSES[int(rng.integers(0, 3))], "human", who, later, run_id="ls1")
            if rng.random() < 0.05:
                add(ex, "bogus", "human", "folder", at + timedelta(days=1), run_id="i2")
        elif r < 0.75:
            infl = bool(rng.random() < 0.3)
            conf = float(rng.random())
            add(
                ex,
                label,
                "label_model",
                "dawid_skene:x",
                at,
                confidence=conf,
                model_influenced=infl,
            )
            if rng.random() < 0.1:
                add(
                    ex,
                    None,
                    "label_model",
                    "dawid_skene:x",
                    at + timedelta(hours=2),
                    confidence=0.0,
                )
        elif r < 0.85:
            add(ex, label, "model", "student@v3", at, confidence=float(rng.random()))
        if rng.random() < 0.1:
            add(ex, label, "rule", "lf_x", at)
    store.write(LABELS, label_events(events))
    matrix = Path(store.base) / "label_matrices" / "run=w1"
    matrix.mkdir(parents=True)
    votes = {f"lf_{j}": pa.array(rng.integers(-1, 3, len(ids)), pa.int16()) for j in range(4)}
    pq.write_table(pa.table({"example_id": ids, **votes}), matrix / "part-00000.parquet")
    asked = [
        Request(ids[i], ("train", "gold")[i % 2], "margin", 0.5, "m@v1") for i in range(0, 40, 3)
    ]
    write_requests(store, asked, run_id="s1", batch_id="b1")
    return store


@pytest.fixture
def pushgateway():
    """A local HTTP server that takes Pushgateway PUTs: its port, and the path, body and
    Authorization header of each push."""
    seen: list[tuple[str, str, str | None]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append((self.path, body, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, seen
    server.shutdown()
