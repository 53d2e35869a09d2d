"""Each SLI on a hand-built store equals a hand computation."""

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.schema import load_config
from tasks.sampling.requests import Request, write_requests
from tasks.slis.compute import RunFacts, compute_slis
from tasks.store import DEV, EXAMPLES, LABELS, SCHEMAS, GoldSplit, Store
from tasks.validation import GatePolicy, GoldEvidence, Thresholds, decide
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


def _value(slis, metric, **labels):
    (hit,) = [s for s in slis if s.metric == metric and dict(s.labels) == labels]
    return hit


def test_every_sli_equals_its_hand_computation(hand_store):
    store, a, g = hand_store
    cfg = load_config(
        overrides={
            "store.root": store.uri,
            "taxonomy.classes": ["0", "1"],
            "labels.max_model_share": 0.5,
            "labels.cost_per_label": {"folder": 0.0, "label_studio:": 2.5, "label_model": 0.0},
            "health.max_label_age_h": 20,
            "health.max_backlog": 1,
            "health.max_model_influenced": 0.1,
        }
    )
    thin = GoldEvidence(("0", "1"), np.array([0, 1]), np.array([[0.6, 0.4], [0.8, 0.2]]))
    policy = GatePolicy(1, Thresholds(None, None, None), None, Thresholds(None, None, None))
    facts = RunFacts(
        flow="retrain",
        pseudo_label_precision=0.7,
        pseudo_label_coverage=0.4,
        gate=decide(thin, policy),
        retrain_outcomes=(True, False, True, True),
        now=NOW,
    )
    slis = compute_slis(store, cfg, facts)
    # M1: 6 training labels (4 human, 2 label model; the cap 0.5/0.5 * 5 lets a4 in) + 2
    # gold human labels, of 12 examples
    assert _value(slis, "label_coverage_ratio").value == pytest.approx(8 / 12)
    assert _value(slis, "label_coverage_source_ratio", source_kind="human").value == pytest.approx(
        6 / 12
    )
    assert _value(
        slis, "label_coverage_source_ratio", source_kind="label_model"
    ).value == pytest.approx(2 / 12)
    assert _value(slis, "label_class_share_ratio", **{"class": "0"}).value == pytest.approx(3 / 6)
    # M2: ages 24 h (x4) and 12 h (x2): median 24 h, over the 20 h limit; first labels
    # 24 h (x4), 36 h (x2) after ingest, and the gold ones 1 h *before* ingest count 0
    age = _value(slis, "label_age_median_seconds")  # seconds, the limit in config in hours
    assert (age.value, age.threshold, age.breached) == (24 * 3600.0, 20 * 3600.0, True)
    assert _value(slis, "ingest_to_label_median_seconds").value == pytest.approx(24 * 3600.0)
    # M3: human answers on gold dev: folder right twice, bob right once of twice -> 3/4
    assert _value(
        slis, "label_accuracy_gold_ratio", source_kind="human", source="all"
    ).value == pytest.approx(3 / 4)
    # ...each labeling function on gold dev (g0 truth 0, g1 truth 1): lf_a 2/2, lf_b 1/2,
    # which is below weak_labeling.accuracy_floor 0.6
    assert _value(slis, "label_accuracy_gold_ratio", source_kind="rule", source="lf_a").value == 1.0
    lf_b = _value(slis, "label_accuracy_gold_ratio", source_kind="rule", source="lf_b")
    assert (lf_b.value, lf_b.breached) == (0.5, True)
    # M4: folder, label_studio:bob, dawid_skene:x; lf_a and lf_b agree on 1 of the 2 rows
    # both vote on
    assert _value(slis, "label_sources").value == 3
    assert _value(slis, "label_source_agreement_ratio").value == pytest.approx(0.5)
    # M5: from the run, below the 0.8 floor
    p = _value(slis, "pseudo_label_precision_ratio")
    assert (p.value, p.breached) == (0.7, True)
    # M7: 3 of 4
    assert _value(slis, "retrain_success_ratio").value == pytest.approx(0.75)
    # M8: two open train requests, over the limit of 1
    backlog = _value(slis, "annotation_backlog", stream="train")
    assert (backlog.value, backlog.breached) == (2.0, True)
    assert _value(slis, "annotation_backlog", stream="gold").value == 0.0
    # M9: 1 of 6 training labels model-influenced, over 0.1
    m9 = _value(slis, "model_influenced_label_ratio")
    assert (m9.value, m9.breached) == (pytest.approx(1 / 6), True)
    # M10: two label_studio events at 2.5 each, over 6 human-verified examples
    assert _value(slis, "label_cost_per_verified_label").value == pytest.approx(5.0 / 6)
    # the gate: class "1" recall collapsed to 0, under health.min_class_recall 0.5
    worst = _value(slis, "class_recall_min_ratio")
    assert (worst.value, worst.breached) == (0.0, True)


def test_a_functions_own_floor_is_its_accuracy_slis_threshold_zero_included(hand_store):
    """lf_b (1/2 on gold dev) is configured never to be quarantined (floor 0.0): its SLI
    does not breach either; lf_a keeps the global floor."""
    store, _, _ = hand_store
    lf = {"kind": "knn"}
    cfg = load_config(
        overrides={
            "store.root": store.uri,
            "taxonomy.classes": ["0", "1"],
            "weak_labeling.functions": [
                {**lf, "name": "lf_a"},
                {**lf, "name": "lf_b", "accuracy_floor": 0.0},
            ],
        }
    )
    slis = compute_slis(store, cfg, RunFacts(flow="retrain", now=NOW))
    lf_a = _value(slis, "label_accuracy_gold_ratio", source_kind="rule", source="lf_a")
    lf_b = _value(slis, "label_accuracy_gold_ratio", source_kind="rule", source="lf_b")
    assert (lf_a.threshold, lf_a.breached) == (0.6, False)
    assert (lf_b.value, lf_b.threshold, lf_b.breached) == (0.5, 0.0, False)
