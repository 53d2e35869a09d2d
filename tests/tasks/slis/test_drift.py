"""Drift: near zero for two samples of the same data, a breach for a shifted batch."""

import numpy as np
import pytest
import torch

from configs.schema import load_config
from models import ClassifierConfig, build_classifier
from tasks.images.decode import decode_images
from tasks.ingest import RawRecord, ingest_records, mnist5k_pngs
from tasks.slis import check_drift
from tasks.slis.drift import compare, intensity_histogram, js_distance, mmd_permutation_test
from tasks.store import Store


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    pngs, _ = mnist5k_pngs()  # ordered by class: draw a random subset
    pick = np.random.default_rng(0).permutation(len(pngs))[:1200]
    return decode_images([pngs[i] for i in pick], 28, 1)  # (1200, 1, 28, 28) uint8


def _embed():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig("small_cnn", 10, 1, 28, (0.13,), (0.31,))).eval()

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.features(torch.from_numpy(images).float() / 255.0).numpy()

    return embed


KW = dict(permutations=200, p_value=0.01, js_threshold=0.1)


def test_two_samples_of_the_same_data_do_not_drift(digits):
    check = compare(
        "same", digits[:300], digits[300:600], _embed(), rng=np.random.default_rng(0), **KW
    )
    assert not check.breached, check.why
    assert check.p_value > 0.05 and check.js < 0.02


@pytest.mark.parametrize(
    ("shift", "js_breach"),
    [
        (lambda x: 255 - x, True),  # inverted: every view sees it
        (lambda x: np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3))), False),  # same pixels
    ],
    ids=["inverted", "rotated"],
)
def test_a_shifted_batch_breaches(digits, shift, js_breach):
    check = compare(
        "shifted",
        shift(digits[:300]),
        digits[300:600],
        _embed(),
        rng=np.random.default_rng(0),
        **KW,
    )
    assert check.breached and check.p_value < 0.01
    assert (check.js > 0.1) == js_breach  # rotation keeps the intensity histogram


def test_the_mmd_and_js_match_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    mmd2, p = mmd_permutation_test(x, x[::-1].copy(), 50, rng)  # the same points
    assert mmd2 == pytest.approx(mmd_permutation_test(x, x[::-1].copy(), 10, rng)[0])
    assert p > 0.5
    h = intensity_histogram(np.array([[[[0, 255]]]], np.uint8))
    assert h[0] == 0.5 and h[-1] == 0.5
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert js_distance(h, h) == 0.0


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

    ingest_records(store, records(digits[:600]), cfg, source_name="a", run_id="ingest-1")
    ingest_records(store, records(digits[600:900]), cfg, source_name="a", run_id="ingest-2")
    checks, newest = check_drift(
        store, cfg, build_classifier(ClassifierConfig("small_cnn", 10, 1, 28, (0.13,), (0.31,)))
    )
    batch = {c.name: c for c in checks}["newest_batch"]
    assert not batch.breached, batch.why
    ingest_records(store, records(255 - digits[900:1200]), cfg, source_name="a", run_id="ingest-3")
    checks, newest = check_drift(store, cfg, None)  # no model: the histograms alone
    batch = {c.name: c for c in checks}["newest_batch"]
    assert batch.breached and batch.mmd2 is None and "pixel intensities differ" in batch.why
    assert len(newest) > 200  # the slice to sample: the inverted batch (gold left out)


def test_drift_blocks_promotion_only_when_configured(digits):
    from tasks.slis import drift_gate_checks
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
