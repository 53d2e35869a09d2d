"""The store on S3: ingest into a local moto S3 server and read everything back."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from configs.schema import load_config
from tasks.ingest import image_folder_records, ingest_records
from tasks.store import (
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SNAPSHOTS,
    Store,
    StoreCounts,
    resolve_labels,
)

BUCKET = "semilabel-store-test"
PREFIX = "runs/store"

# label folder -> number of images in it
LABELED = {"0": 2, "3": 2, "7": 1}
N_UNLABELED_UNIQUE = 3
BAD_BYTES = b"this is not an image at all\n"


def _png(seed: int, size: tuple[int, int] = (12, 9)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    pixels[0, 0] = seed % 256  # unique content per seed, whatever the rng draws
    pixels[0, 1] = seed // 256
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (free port) with dummy credentials in the env."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str):
    client = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def store_uri(s3_endpoint: str, s3_client) -> str:
    return f"s3://{BUCKET}/{PREFIX}?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"


@pytest.fixture
def image_folder(tmp_path: Path) -> dict:
    """Labeled class folders, an unlabeled folder with one duplicate, and one bad file."""
    root = tmp_path / "images"
    expected: dict[str, tuple[bytes, str | None, Path]] = {}  # id -> (bytes, label, path)
    seed = 0
    for label, n in LABELED.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            data = _png(seed)
            seed += 1
            path = root / label / f"img{i}.png"
            path.write_bytes(data)
            expected[hashlib.sha256(data).hexdigest()] = (data, label, path)
    (root / "unlabeled").mkdir()
    for i in range(N_UNLABELED_UNIQUE):
        data = _png(seed)
        seed += 1
        path = root / "unlabeled" / f"u{i}.png"
        path.write_bytes(data)
        expected[hashlib.sha256(data).hexdigest()] = (data, None, path)
    # the same bytes as a labeled image: deduped, adds no example
    (root / "unlabeled" / "copy_of_0.png").write_bytes((root / "0" / "img0.png").read_bytes())
    (root / "bad.png").write_bytes(BAD_BYTES)
    return {"root": root, "expected": expected}


def _object_keys(client) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        keys += [o["Key"] for o in page.get("Contents", [])]
    # S3 "directories" pyarrow creates are zero-byte keys ending in "/"; keep data objects
    return sorted(k for k in keys if not k.endswith("/"))


def test_ingest_into_s3_store_and_read_back(store_uri: str, s3_client, image_folder: dict):
    root: Path = image_folder["root"]
    expected: dict[str, tuple[bytes, str | None, Path]] = image_folder["expected"]
    n_labeled = sum(LABELED.values())
    n_unique = n_labeled + N_UNLABELED_UNIQUE
    assert len(expected) == n_unique == 8

    cfg = load_config(
        overrides={
            "store.root": store_uri,
            "source.kind": "image_folder",
            "source.path": str(root),
            "ingest.workers": 1,
        }
    )
    store = Store(cfg.store.root)
    assert store.fs.type_name == "s3"
    assert not store.is_local
    assert store.counts() == StoreCounts(0, 0, 0, 0)

    total, records = image_folder_records(cfg.source.path)
    assert total == n_unique + 2  # + the duplicate copy + the bad file
    summary = ingest_records(
        store, records, cfg.data_spec(), cfg.ingest, source_name="s3-test", run_id="run-1"
    )
    assert summary.seen == 10
    assert summary.ingested == 8
    assert summary.duplicates == 1
    assert summary.quarantined == {"not_an_image": 1}
    assert summary.label_events == 5
    assert summary.label_events_duplicate == 0
    assert summary.labeled == 5
    assert summary.unlabeled == 3

    # -- counts through a fresh handle on the same URI
    reader = Store(store_uri)
    assert reader.counts() == StoreCounts(examples=8, label_events=5, quarantined=1, snapshots=0)

    # -- the objects are really in the bucket, one Parquet file per dataset
    keys = _object_keys(s3_client)
    assert len(keys) == 3
    for dataset in (EXAMPLES, LABELS, QUARANTINE):
        mine = [k for k in keys if k.startswith(f"{PREFIX}/{dataset}/")]
        assert len(mine) == 1, keys
        assert re.fullmatch(
            rf"{re.escape(PREFIX)}/{dataset}/date=\d{{4}}-\d{{2}}-\d{{2}}/part-[^/]+\.parquet",
            mine[0],
        ), mine[0]
        assert reader.files(dataset) == [f"{BUCKET}/{mine[0]}"]
        # the object itself is a valid Parquet file, fetched with plain boto3
        body = s3_client.get_object(Bucket=BUCKET, Key=mine[0])["Body"].read()
        assert (
            pq.read_table(io.BytesIO(body)).num_rows
            == {EXAMPLES: 8, LABELS: 5, QUARANTINE: 1}[dataset]
        )
    assert reader.files(SNAPSHOTS) == []

    # -- image bytes read back equal the files' bytes
    ex = reader.read(
        EXAMPLES, ["example_id", "image", "height", "width", "channels", "source_uri"]
    ).to_pylist()
    assert len(ex) == 8
    assert {r["example_id"] for r in ex} == set(expected)
    for row in ex:
        data, _label, path = expected[row["example_id"]]
        assert row["image"] == data == path.read_bytes()
        assert hashlib.sha256(row["image"]).hexdigest() == row["example_id"]
        assert row["source_uri"] == path.resolve().as_uri()
        assert (row["height"], row["width"], row["channels"]) == (9, 12, 1)

    # a filtered read goes to the same object
    some_id = next(iter(expected))
    one = reader.read(EXAMPLES, ["image"], filter=pc.field("example_id") == some_id)
    assert one.column("image").to_pylist() == [expected[some_id][0]]

    # -- quarantine keeps the bad file's bytes and reason
    q = reader.read(QUARANTINE).to_pylist()
    assert len(q) == 1
    assert q[0]["reason"] == "not_an_image"
    assert q[0]["record_kind"] == "example"
    assert q[0]["data"] == BAD_BYTES
    assert q[0]["source_uri"] == (root / "bad.png").resolve().as_uri()

    # -- label events and resolution
    events = reader.read(LABELS).to_pylist()
    assert {(e["example_id"], e["label"]) for e in events} == {
        (i, lab) for i, (_d, lab, _p) in expected.items() if lab is not None
    }
    assert all(e["source_kind"] == "human" and e["source_name"] == "s3-test" for e in events)
    resolved = resolve_labels(
        reader,
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
    )
    assert resolved.num_rows == 5
    assert {r["example_id"]: r["label"] for r in resolved.to_pylist()} == {
        i: lab for i, (_d, lab, _p) in expected.items() if lab is not None
    }
    assert set(resolved.column("source_kind").to_pylist()) == {"human"}
    assert reader.remove_stale_temp_files() == 0

    # -- a second ingest adds nothing
    _, records = image_folder_records(cfg.source.path)
    again = ingest_records(
        store, records, cfg.data_spec(), cfg.ingest, source_name="s3-test", run_id="run-2"
    )
    assert again.seen == 10
    assert again.ingested == 0
    assert again.duplicates == 9
    assert again.label_events == 0
    assert again.label_events_duplicate == 5
    assert again.quarantined == {"not_an_image": 1}
    assert Store(store_uri).counts() == StoreCounts(8, 5, 1, 0)
    assert _object_keys(s3_client) == keys  # no new objects, not even empty files


def test_two_ingests_at_once_on_s3_store_each_example_once(s3_endpoint: str, s3_client, tmp_path):
    """The commit lease on an object store (no atomic create-if-absent there): two ingests
    of one folder started together, in two threads, each example and event once."""
    import threading

    uri = f"s3://{BUCKET}/concurrent?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    folder = tmp_path / "many"
    for i in range(240):
        label = str(i % 3) if i < 120 else "unlabeled"
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i}.png").write_bytes(_png(500 + i))
    cfg = load_config(overrides={"store.root": uri, "ingest.workers": 1, "store.rows_per_file": 20})
    barrier = threading.Barrier(2)
    results: list = []

    def run(k: int) -> None:
        total, records = image_folder_records(folder)
        barrier.wait()
        results.append(
            ingest_records(
                Store(uri),
                records,
                cfg.data_spec(),
                cfg.ingest,
                source_name="f",
                run_id=f"r{k}",
                total=total,
            )
        )

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sum(r.ingested for r in results) == 240
    store = Store(uri)
    ids = store.read(EXAMPLES, ["example_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == 240
    events = store.read(LABELS, ["event_id"]).column(0).to_pylist()
    assert len(events) == len(set(events)) == 120
