"""The drift checks on a real store: the newest ingest batch against earlier ones, and
as gate checks only when drift blocks promotion."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

import tasks.slis.drift_check as drift_check
from configs.schema import load_config
from models import ClassifierConfig, build_classifier
from tasks.images.decode import decode_images
from tasks.ingest import RawRecord, ingest_records
from tasks.slis.drift import compare, intensity_histogram, js_distance
from tasks.slis.drift_check import NewestRows, Reservoir, check_drift, drift_gate_checks
from tasks.slis.inputs import gold_split
from tasks.store import EXAMPLES, LABELS, SCHEMAS, Store, content_id
from tests.conftest import digit_png, label_events

KW = dict(permutations=200, p_value=0.01, js_threshold=0.1)


def _check_drift(store, cfg, model):
    return check_drift(store, cfg.data_spec(), cfg.health.drift, cfg.labels, model)


def test_the_newest_ingest_batch_is_checked_against_earlier_ones(tmp_path, digits):
    import io

    from PIL import Image

    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "ingest.workers": 1,
            "health.drift.sample_size": 200,
            "health.drift.permutations": 100,
        }
    )
    store = Store(cfg.store.root)

    def records(images):
        for i, im in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(im[0]).save(buf, "PNG")
            yield RawRecord(f"mem://{i}", buf.getvalue())

    ingest_records(
        store,
        records(digits[:600]),
        cfg.data_spec(),
        cfg.ingest,
        source_name="a",
        run_id="ingest-1",
    )
    ingest_records(
        store,
        records(digits[600:900]),
        cfg.data_spec(),
        cfg.ingest,
        source_name="a",
        run_id="ingest-2",
    )
    checks, newest = _check_drift(
        store, cfg, build_classifier(ClassifierConfig("small_cnn", 10, 1, 28, (0.13,), (0.31,)))
    )
    batch = {c.name: c for c in checks}["newest_batch"]
    assert not batch.breached, batch.why
    ingest_records(
        store,
        records(255 - digits[900:1200]),
        cfg.data_spec(),
        cfg.ingest,
        source_name="a",
        run_id="ingest-3",
    )
    checks, newest = _check_drift(store, cfg, None)  # no model: the histograms alone
    batch = {c.name: c for c in checks}["newest_batch"]
    assert batch.breached and batch.mmd2 is None and "pixel intensities differ" in batch.why
    assert len(newest) > 200  # the slice to sample: the inverted batch (gold left out)


def test_drift_blocks_promotion_only_when_configured(digits):
    from tasks.validation import GatePolicy, GoldEvidence, Thresholds, decide

    drifted = compare(
        "newest_batch",
        255 - digits[:200],
        digits[200:400],
        None,
        rng=np.random.default_rng(0),
        **KW,
    )
    y = np.arange(500) % 2
    good = GoldEvidence(("0", "1"), y, np.eye(2)[y] * 0.98 + 0.01)  # all right
    policy = GatePolicy(200, Thresholds(0.9, 0.9, None), 0.8, Thresholds(0.01, 0.01, 0.05))
    assert decide(good, policy, extra=drift_gate_checks([drifted], "report")).passed
    blocked = decide(good, policy, extra=drift_gate_checks([drifted], "block"))
    assert blocked.verdict == "rejected"
    assert [c.name for c in blocked.violations] == ["drift[newest_batch]"]
    assert "pixel intensities differ" in blocked.violations[0].rule


# -- fixed-size samples ------------------------------------------------------------------


def _ids(n: int, start: int = 0):
    return pa.array([f"x{i:05d}" for i in range(start, start + n)], pa.string())


def _stream(reservoir, n: int, cuts: list[int]):
    """Offer ids x0..x(n-1) to `reservoir` in batches cut at `cuts`."""
    edges = [0, *cuts, n]
    for lo, hi in zip(edges, edges[1:], strict=False):
        reservoir.add(_ids(hi - lo, lo))
    return reservoir


def test_the_reservoir_keeps_its_size_and_the_same_sample_for_the_same_seed():
    one = _stream(Reservoir(50, 3), 10_000, [1, 999, 5000, 9999])
    assert one.seen == 10_000 and len(one.ids) == 50 and len(set(one.ids)) == 50
    assert one.ids == sorted(one.ids)  # stream order
    # the same seed gives the same sample however the stream is cut; another seed another
    assert _stream(Reservoir(50, 3), 10_000, [4096, 8192]).ids == one.ids
    assert _stream(Reservoir(50, 4), 10_000, [4096, 8192]).ids != one.ids
    # a stream that fits is kept whole, in order
    assert _stream(Reservoir(50, 3), 30, [7]).ids == _ids(30).to_pylist()


def test_the_reservoir_samples_uniformly():
    n, k, draws = 100, 10, 2000
    counts = np.zeros(n)
    for seed in range(draws):
        kept = _stream(Reservoir(k, seed), n, [33, 64]).ids
        counts[[int(i[1:]) for i in kept]] += 1
    # each id in about k/n of the samples: binomial(2000, 0.1), sd 13.4
    assert np.all(np.abs(counts - draws * k / n) < 60), counts


def test_the_reference_window_keeps_the_newest_rows():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    minutes = [5, 1, 9, 9, 3, 7, 9, 2]  # x0..x7; three at minute 9
    window = NewestRows(4)
    for lo, hi in ((0, 3), (3, 8)):
        times = pa.array([t0 + timedelta(minutes=m) for m in minutes[lo:hi]])
        window.add(_ids(hi - lo, lo), times)
    # newest first; equal times in stream order
    assert window.seen == 8 and window.ids == ["x00002", "x00003", "x00006", "x00005"]


def _two_run_store(cfg, n_first: int, n_second: int, labeled_every: int):
    """Real digit PNGs in two ingest runs (the second an hour later), a human label on
    every `labeled_every`-th example."""
    store = Store(cfg.store.root)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids: list[str] = []
    for run, (lo, hi) in enumerate(((0, n_first), (n_first, n_first + n_second))):
        images = [digit_png(i % 3, i) for i in range(lo, hi)]
        ids += [content_id(b) for b in images]
        rows = [
            {"example_id": content_id(b), "image": b, "height": 28, "width": 28, "channels": 1}
            | {"source": "t", "source_uri": f"mem://{lo + k}", "run_id": f"ingest-{run + 1}"}
            | {"ingested_at": t0 + timedelta(hours=run, seconds=k)}
            for k, b in enumerate(images)
        ]
        store.write(EXAMPLES, pa.Table.from_pylist(rows, schema=SCHEMAS[EXAMPLES]))
    events = [
        {"event_id": f"e{i}", "example_id": e, "label": str(i % 3)}
        for i, e in enumerate(ids[::labeled_every])
    ]
    store.write(LABELS, label_events(events))
    return store


def _counting(monkeypatch):
    """Counts the images `check_drift` decodes and the image cells it reads from the
    store, around the real functions."""
    seen = {"decoded": 0, "image_rows": 0}
    decode, iter_batches = drift_check.decode_images, Store.iter_batches

    def counted_decode(blobs, size, channels):
        seen["decoded"] += len(blobs)
        return decode(blobs, size, channels)

    def counted_batches(self, dataset, columns=None, **kw):
        for b in iter_batches(self, dataset, columns, **kw):
            if columns is None or "image" in columns:
                seen["image_rows"] += b.num_rows
            yield b

    monkeypatch.setattr(drift_check, "decode_images", counted_decode)
    monkeypatch.setattr(Store, "iter_batches", counted_batches)
    return seen


def test_drift_decodes_a_fixed_number_of_images_whatever_the_store_holds(tmp_path, monkeypatch):
    sample, reference = 30, 50
    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "health.drift.sample_size": sample,
            "health.drift.reference_size": reference,
            "health.drift.permutations": 20,
        }
    )
    store = _two_run_store(cfg, 2500, 500, labeled_every=4)
    seen = _counting(monkeypatch)
    checks, newest = _check_drift(store, cfg, None)
    assert [(c.name, c.n_a, c.n_b) for c in checks] == [
        ("newest_batch", sample, sample),
        ("labeled_vs_unlabeled", sample, sample),
    ]
    assert seen["decoded"] == 4 * sample  # of 3,000 stored
    # image cells read: the three samples and the reference window, no more
    assert seen["image_rows"] <= 3 * sample + reference
    assert newest == []  # the same digits in both runs: no drift, no slice to sample
    again, _ = _check_drift(store, cfg, None)
    assert again == checks  # seeded: the same samples and statistics


def test_where_the_samples_cover_the_store_each_side_is_all_of_it(tmp_path):
    def cfg_with(sample: int):
        over = {"health.drift.sample_size": sample, "health.drift.reference_size": 400}
        return load_config(overrides={"store.root": str(tmp_path / "store"), **over})

    store = _two_run_store(cfg_with(20), 300, 100, labeled_every=3)
    table = store.read(EXAMPLES, ["example_id", "image", "run_id"])
    outside_gold = ~gold_split(cfg_with(20).data_spec()).is_gold(table.column("example_id"))
    rows = table.filter(pa.array(outside_gold)).to_pylist()
    labeled = set(store.read(LABELS, ["example_id"]).column(0).to_pylist())

    def js(a, b):
        hist = [
            intensity_histogram(decode_images([r["image"] for r in side], 28, 1)) for side in (a, b)
        ]
        return js_distance(*hist)

    new = [r for r in rows if r["run_id"] == "ingest-2"]
    old = [r for r in rows if r["run_id"] == "ingest-1"]
    lab = [r for r in rows if r["example_id"] in labeled]
    unlab = [r for r in rows if r["example_id"] not in labeled]
    expected = [
        ("newest_batch", len(new), len(old), js(new, old)),
        ("labeled_vs_unlabeled", len(lab), len(unlab), js(lab, unlab)),
    ]
    # a sample as large as the store outside gold, and a much larger one: every example,
    # so the same checks, and the histograms of all of each side
    for sample in (len(rows), 10 * len(rows)):
        checks, _ = _check_drift(store, cfg_with(sample), None)
        got = [(c.name, c.n_a, c.n_b, c.js) for c in checks]
        assert [g[:3] for g in got] == [e[:3] for e in expected]
        assert np.allclose([g[3] for g in got], [e[3] for e in expected], atol=1e-12)
