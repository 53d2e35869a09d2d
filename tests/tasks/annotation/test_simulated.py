"""The simulated annotator answers from the MNIST truth, wrong at the configured rate."""

import numpy as np

from configs.schema import load_config
from flows.annotate import annotation_inputs
from flows.sample import sampling_inputs
from tasks.annotation.delivery import deliver
from tasks.annotation.simulated import mnist5k_truth, simulated_answers
from tasks.ingest import ingest_records, open_source
from tasks.sampling.run import sample_for_annotation
from tasks.store import LatestLabels, Store


def test_answers_follow_the_truth_at_the_error_rate():
    truth = mnist5k_truth()
    assert len(truth) == 5000 and set(truth.values()) == {str(d) for d in range(10)}
    requests = [{"example_id": e, "request_id": f"r{i}"} for i, e in enumerate(list(truth)[:2000])]
    classes = tuple(str(d) for d in range(10))
    right = simulated_answers(requests, truth, classes, 0.0, np.random.default_rng(0))
    assert all(a.label == truth[a.example_id] for a in right)
    noisy = simulated_answers(requests, truth, classes, 0.1, np.random.default_rng(0))
    wrong = sum(a.label != truth[a.example_id] for a in noisy) / len(noisy)
    assert 0.08 < wrong < 0.12


def test_simulate_mode_turns_requests_into_human_labels(tmp_path):
    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "ingest.workers": 1,
            "sampling.mode": "simulate",
            "sampling.strategy": "random",  # no model needed
            "sampling.budget.train": 20,
            "sampling.budget.gold": 10,
        }
    )
    store = Store(cfg.store.root)
    spec = cfg.data_spec()
    name, total, records = open_source(spec, cfg.source)
    ingest_records(store, records, spec, cfg.ingest, source_name=name, run_id="ingest", total=total)
    before = LatestLabels.read(store).human(cfg.taxonomy.classes)
    result = sample_for_annotation(store, sampling_inputs(cfg), "round-1")
    delivery = deliver(store, annotation_inputs(cfg), result, "round-1")
    assert delivery.imported is not None and delivery.imported.events_written == 20
    # the embedded default keeps every gold label already: no gold example to ask about
    assert result.candidates["gold"] == 0
    after = LatestLabels.read(store).human(cfg.taxonomy.classes)
    truth = mnist5k_truth()
    new = set(after) - set(before)
    assert len(new) == 20 and all(after[e][0] == truth[e] for e in new)
