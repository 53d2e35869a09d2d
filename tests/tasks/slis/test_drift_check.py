"""The drift checks on a real store: the newest ingest batch against earlier ones, and
as gate checks only when drift blocks promotion."""

import numpy as np

from configs.schema import load_config
from models import ClassifierConfig, build_classifier
from tasks.ingest import RawRecord, ingest_records
from tasks.slis.drift import compare
from tasks.slis.drift_check import check_drift, drift_gate_checks
from tasks.store import Store

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
