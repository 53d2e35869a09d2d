"""Each SLI on a hand-built store equals a hand computation."""

import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.health import HealthConfig
from configs.schema import load_config
from configs.weak_labeling import WeakLabelingConfig
from flows.monitor import label_health_inputs
from tasks.slis.compute import (
    RunFacts,
    compute_slis,
    drift,
    gate,
    gold_shift,
    label_model_accuracy,
    pseudo_labels,
    retrain_success,
    spend,
)
from tasks.slis.drift import DriftCheck
from tasks.store import DEV, EXAMPLES, LABELS, GoldSplit, LatestLabels
from tasks.validation import GatePolicy, GoldEvidence, Thresholds, decide
from tests.tasks.slis.conftest import CLASSES, NOW


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
    slis = compute_slis(store, label_health_inputs(cfg), facts)
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
    slis = compute_slis(store, label_health_inputs(cfg), RunFacts(flow="retrain", now=NOW))
    lf_a = _value(slis, "label_accuracy_gold_ratio", source_kind="rule", source="lf_a")
    lf_b = _value(slis, "label_accuracy_gold_ratio", source_kind="rule", source="lf_b")
    assert (lf_a.threshold, lf_a.breached) == (0.6, False)
    assert (lf_b.value, lf_b.threshold, lf_b.breached) == (0.5, 0.0, False)


# -- the vectorised families against a straightforward per-row computation -------------

STORE_FAMILIES = {
    "label_coverage_ratio",
    "label_coverage_source_ratio",
    "label_class_share_ratio",
    "label_age_median_seconds",
    "ingest_to_label_median_seconds",
    "label_accuracy_gold_ratio",
    "label_sources",
    "label_source_agreement_ratio",
    "model_influenced_label_ratio",
    "label_cost_per_verified_label",
}


def _per_row(store, cfg, now) -> list[tuple]:
    """The store's SLIs row by row, one Python object per example and event: (metric,
    labels, value, threshold, breached), in the order compute_slis reports them."""
    classes = tuple(cfg.taxonomy.classes)
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    ingested = {r["example_id"]: r["ingested_at"] for r in store.read(EXAMPLES).to_pylist()}
    latest = LatestLabels.read(store)
    human = latest.human(classes)
    parts = dict(zip(human, split.parts(list(human)), strict=True))
    truth = {e: lab for e, (lab, _) in human.items() if parts[e] == DEV}
    gold_human = {e for e in human if parts[e]}
    resolved = latest.resolve(
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
        leave_out=split,
        classes=classes,
    ).to_pylist()
    events = store.read(LABELS).to_pylist()
    out = []
    # M1
    labeled = {r["example_id"] for r in resolved} | gold_human
    out.append(("label_coverage_ratio", (), len(labeled) / len(ingested), None, None))
    kinds = defaultdict(set, {"human": set(gold_human)})
    for r in resolved:
        kinds[r["source_kind"]].add(r["example_id"])
    for kind, ids in sorted(kinds.items()):
        n = len(ids) / len(ingested)
        out.append(("label_coverage_source_ratio", (("source_kind", kind),), n, None, None))
    for c in classes:
        share = sum(r["label"] == c for r in resolved) / len(resolved)
        out.append(("label_class_share_ratio", (("class", c),), share, None, None))
    # M2
    created = {e["event_id"]: e["created_at"] for e in events}
    ages = [(now - created[r["event_id"]]).total_seconds() for r in resolved]
    limit = cfg.health.max_label_age_h * 3600
    age = statistics.median(ages)
    out.append(("label_age_median_seconds", (), age, limit, age > limit))
    first: dict = {}
    for e in events:
        first[e["example_id"]] = min(e["created_at"], first.get(e["example_id"], e["created_at"]))
    lags = [
        max((first[e] - ingested[e]).total_seconds(), 0.0)
        for e in labeled
        if e in first and e in ingested
    ]
    out.append(("ingest_to_label_median_seconds", (), statistics.median(lags), None, None))
    # M3: people (each source's newest answer; the first stored of equally new ones)
    answers: dict = {}
    for e in events:
        if e["source_kind"] != "human" or e["example_id"] not in truth:
            continue
        key = (e["source_name"], e["example_id"])
        if key not in answers or e["created_at"] > answers[key]["created_at"]:
            answers[key] = e
    right = [a["label"] == truth[ex] for (_, ex), a in answers.items()]
    out.append(
        (
            "label_accuracy_gold_ratio",
            (("source_kind", "human"), ("source", "all")),
            sum(right) / len(right),
            None,
            None,
        )
    )
    # M3: labeling functions; M4
    (matrix_file,) = (Path(store.base) / "label_matrices").glob("run=*/*.parquet")
    matrix = pq.read_table(matrix_file).to_pylist()
    names = [c for c in matrix[0] if c != "example_id"]
    for name in names:
        hits = [
            r[name] == classes.index(truth[r["example_id"]])
            for r in matrix
            if r["example_id"] in truth and r[name] >= 0
        ]
        acc, floor = sum(hits) / len(hits), cfg.weak_labeling.accuracy_floor
        labels = (("source_kind", "rule"), ("source", name))
        out.append(("label_accuracy_gold_ratio", labels, acc, floor, acc < floor))
    sources = {e["source_name"] for e in events}
    out.append(("label_sources", (), float(len(sources)), None, None))
    agreement = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = [r[a] == r[b] for r in matrix if r[a] >= 0 and r[b] >= 0]
            agreement.append(sum(both) / len(both))
    out.append(("label_source_agreement_ratio", (), sum(agreement) / len(agreement), None, None))
    # M9, M10
    share = sum(bool(r["model_influenced"]) for r in resolved) / len(resolved)
    limit = cfg.health.max_model_influenced
    out.append(("model_influenced_label_ratio", (), share, limit, share > limit))
    costs = cfg.labels.cost_per_label
    spend = 0.0
    for e in events:
        name = e["source_name"]
        prefix = max(
            (k for k in costs if k.endswith(":") and name.startswith(k)), key=len, default=None
        )
        spend += costs.get(name, costs[prefix] if prefix else costs.get(e["source_kind"], 0.0))
    out.append(("label_cost_per_verified_label", (), spend / len(human), None, None))
    return out


def test_the_vectorised_slis_equal_a_per_row_computation(mixed_store):
    """Every SLI computed from the store, on a few hundred examples with a label log of
    every kind, equals the straightforward computation over one Python object per
    example and event; same rows, same order."""
    store = mixed_store
    cfg = load_config(
        overrides={
            "store.root": store.uri,
            "taxonomy.classes": list(CLASSES),
            "labels.confidence_floor": 0.3,
            "labels.max_model_share": 0.4,
            "labels.cost_per_label": {"label_studio:": 2.5, "label_studio:amy": 1.25, "rule": 0.1},
            "health.max_label_age_h": 100,
        }
    )
    slis = compute_slis(store, label_health_inputs(cfg), RunFacts(flow="retrain", now=NOW))
    got = [(s.metric, s.labels, s.value, s.threshold, s.breached) for s in slis]
    got = [row for row in got if row[0] in STORE_FAMILIES]
    want = _per_row(store, cfg, NOW)
    assert [row[:2] for row in got] == [row[:2] for row in want]
    for g, w in zip(got, want, strict=True):
        assert g[2] == pytest.approx(w[2], rel=1e-12, abs=0), g
        assert g[3:] == w[3:], g
    # the store is the mix the docstring promises
    kinds = {row[1] for row in got if row[0] == "label_coverage_source_ratio"}
    assert kinds == {(("source_kind", k),) for k in ("human", "label_model", "model")}
    assert len([row for row in got if row[1][:1] == (("source_kind", "rule"),)]) == 4


def test_the_slis_read_no_image(mixed_store, monkeypatch):
    """The SLIs read the examples' ids and ingest times, never their images, whatever
    the store holds."""
    from tasks.store import Store

    asked: list[tuple[str, list[str] | None]] = []
    read, iter_batches = Store.read, Store.iter_batches

    def recorded_read(self, dataset, columns=None, **kw):
        asked.append((dataset, columns))
        return read(self, dataset, columns, **kw)

    def recorded_batches(self, dataset, columns=None, **kw):
        asked.append((dataset, columns))
        return iter_batches(self, dataset, columns, **kw)

    monkeypatch.setattr(Store, "read", recorded_read)
    monkeypatch.setattr(Store, "iter_batches", recorded_batches)
    cfg = load_config(overrides={"store.root": mixed_store.uri, "taxonomy.classes": list(CLASSES)})
    slis = compute_slis(mixed_store, label_health_inputs(cfg), RunFacts(flow="retrain", now=NOW))
    assert _value(slis, "label_coverage_ratio").value > 0
    examples = [columns for dataset, columns in asked if dataset == EXAMPLES]
    assert examples == [["example_id", "ingested_at"]]


def _rows(slis) -> list[tuple]:
    return [(s.metric, dict(s.labels), s.value, s.threshold, s.breached) for s in slis]


def test_the_run_families_report_what_the_run_measured():
    """M5-M7, the gold shift and the gate, from the run's facts alone."""
    h = HealthConfig()  # precision floor 0.8, retrain success 0.8, class recall 0.4
    facts = RunFacts(
        flow="monitor",
        pseudo_label_precision=0.9,
        pseudo_label_coverage=float("nan"),  # not measured: not reported
        pseudo_labeling_off=True,  # a breach whatever the precision
        retrain_outcomes=(True, True, False, True, True),
        drift=(
            DriftCheck("newest_batch", 50, 60, 0.2, 0.001, 0.05, True, "embeddings differ"),
            DriftCheck("labeled_vs_unlabeled", 50, 60, None, None, 0.3, True, "pixels"),
        ),
        gold_shifted=True,
    )
    assert _rows(pseudo_labels(facts, h)) == [
        ("pseudo_label_precision_ratio", {}, 0.9, 0.8, True),
        ("label_accuracy_gold_ratio", {"source_kind": "pseudo_label", "source": "student"}, 0.9)
        + (None, None),
    ]
    assert _rows(drift(facts.drift, h.drift)) == [
        ("drift_mmd_p_value", {"check": "newest_batch"}, 0.001, 0.01, True),
        ("drift_intensity_js", {"check": "newest_batch"}, 0.05, 0.1, False),
        ("drift_breach", {"check": "newest_batch"}, 1.0, 0.5, True),
        ("drift_intensity_js", {"check": "labeled_vs_unlabeled"}, 0.3, 0.1, True),
        ("drift_breach", {"check": "labeled_vs_unlabeled"}, 1.0, 0.5, True),
    ]
    assert _rows(retrain_success(facts.retrain_outcomes, h)) == [
        ("retrain_success_ratio", {}, 0.8, 0.8, False),
        ("retrains_counted", {}, 5.0, None, None),
    ]
    assert retrain_success((), h) == []
    assert _rows(gold_shift(facts)) == [("gold_shift", {}, 1.0, 0.0, True)]
    assert gold_shift(RunFacts(flow="retrain", gold_shifted=True)) == []
    y = np.array([0, 0, 1, 1])
    good = GoldEvidence(("0", "1"), y, np.eye(2)[y] * 0.9 + 0.05)  # all right
    policy = GatePolicy(1, Thresholds(None, None, None), None, Thresholds(None, None, None))
    rows = _rows(gate(decide(good, policy), h))
    assert rows[0] == ("gate_passed", {}, 1.0, None, None)
    assert rows[-1] == ("class_recall_min_ratio", {}, 1.0, 0.4, False)
    assert {r[0] for r in rows[1:-1]} == {"gate_gold_metric"} and len(rows) > 3
    assert gate(None, h) == []


def test_the_label_model_and_cost_families():
    weak = WeakLabelingConfig(label_model="majority_vote")
    assert _rows(label_model_accuracy(0.75, weak)) == [
        ("label_accuracy_gold_ratio", {"source_kind": "label_model", "source": "majority_vote"})
        + (0.75, None, None)
    ]
    assert label_model_accuracy(float("nan"), weak) == label_model_accuracy(None, weak) == []
    events = pa.table(
        {
            "source_kind": ["human", "human", "human", "rule", "label_model"],
            "source_name": ["label_studio:amy", "label_studio:bob", "folder", "lf", "ds:x"],
        }
    )
    costs = {"label_studio:": 2.0, "label_studio:amy": 3.0, "human": 0.5, "label_model": 0.25}
    # amy by name, bob by the prefix, the folder by its kind, the rule at no cost
    assert spend(events, costs) == 3.0 + 2.0 + 0.5 + 0.0 + 0.25
