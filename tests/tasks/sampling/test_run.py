"""The sampling stage's runs on a real store: what each stream may pick, no example asked
twice, the backlog, and a slice's requests."""

import pytest
from prefect import flow

from configs.schema import load_config
from flows.sample import sampling_inputs
from tasks.annotation.answers import Answer, import_answers
from tasks.sampling.requests import Request, RequestLog, write_requests
from tasks.sampling.run import sample_drifted, sample_for_annotation, sample_slice
from tasks.store import EXAMPLES, GoldSplit, LatestLabels, Store


def _cfg(store_cfg, **budget_and_more):
    overrides = {
        "store.root": store_cfg.store.root,
        "taxonomy.classes": list(store_cfg.taxonomy.classes),
        "gold.fraction": store_cfg.gold.fraction,
        "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
        "train.device": "cpu",
        "train.batch_size": 8,
        "sampling.cold_start_steps": 30,
        "sampling.budget.train": 0,
        **budget_and_more,
    }
    return load_config(overrides=overrides)


def _answer(store, cfg, requests, run_id="answers-1"):
    truth = {r["example_id"]: "0" for r in requests}
    answers = [Answer(ex, label, "ann-1", "csv", f"test {ex[:8]}") for ex, label in truth.items()]
    return import_answers(
        store,
        answers,
        [],
        cfg.taxonomy,  # version v1
        tool="csv",
        run_id=run_id,
    )


def test_the_gold_stream_picks_only_gold_examples_without_a_human_label(store_cfg):
    cfg = _cfg(store_cfg, **{"sampling.budget.gold": 1000})
    store = Store(cfg.store.root)
    human = set(LatestLabels.read(store).human(cfg.taxonomy.classes))
    result = sample_for_annotation(store, sampling_inputs(cfg), "run-1")
    ids = [r["example_id"] for r in result.requests]
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    assert ids and split.is_gold(ids).all()
    assert not set(ids) & human
    assert {r["stream"] for r in result.requests} == {"gold"}
    assert all(r["suggestion"] is None for r in result.requests)  # no pre-annotation bias
    # every unlabeled gold example was a candidate, and each was asked for once
    assert len(ids) == len(set(ids)) == result.candidates["gold"]
    # fewer than the 1,000 asked for: the result says why
    all_ids = store.read(EXAMPLES, ["example_id"]).column(0).to_pylist()
    n_gold = int(split.is_gold(all_ids).sum())
    n_labeled = n_gold - len(ids)
    assert result.shortfalls == (
        f"gold: {len(ids)} of the 1000 asked for; of the {n_gold} gold examples, "
        f"{n_labeled} already have a human label and 0 have a request still open (answer "
        "or import those first: `semilabel annotate import --file ...`)",
    )
    assert {"metric": "fewer than asked", "value": result.shortfalls[0]} in result.rows()

    _answer(store, cfg, result.requests)  # every gold example now has a human label
    again = sample_for_annotation(store, sampling_inputs(cfg), "run-2")
    assert again.requests == []
    assert "every one already has a human label" in again.shortfalls[0]
    assert "ingest more images" in again.shortfalls[0]


def test_a_cold_start_is_scored_by_a_teacher_and_nothing_is_asked_twice(store_cfg):
    cfg = _cfg(store_cfg, **{"sampling.budget.train": 10, "sampling.budget.gold": 5})
    store = Store(cfg.store.root)
    first = sample_for_annotation(store, sampling_inputs(cfg), "run-1")
    assert first.model_version.startswith("teacher@")  # no champion yet
    train = [r for r in first.requests if r["stream"] == "train"]
    assert len(train) == 10 and all(r["suggestion"] in ("0", "1", "2") for r in train)
    human = set(LatestLabels.read(store).human(cfg.taxonomy.classes))
    assert not {r["example_id"] for r in train} & human
    assert not GoldSplit(0.3, "gold-v1", 0.5).is_gold([r["example_id"] for r in train]).any()

    # open requests are not asked again...
    second = sample_for_annotation(store, sampling_inputs(cfg), "run-2")
    asked = [r["example_id"] for r in first.requests]
    assert not {r["example_id"] for r in second.requests} & set(asked)
    # ...nor, once answered, examples with a human label (the review stream excepted)
    _answer(store, cfg, first.requests)
    third = sample_for_annotation(store, sampling_inputs(cfg), "run-3")
    assert not {r["example_id"] for r in third.requests} & set(asked)
    log = RequestLog.read(store)
    ids = [r["example_id"] for r in log.requests]
    assert len(ids) == len(set(ids)) == 45  # three batches of 10 + 5


def test_the_backlog_counts_open_requests_and_time_to_answer(store_cfg):
    cfg = _cfg(store_cfg, **{"sampling.budget.gold": 6})
    store = Store(cfg.store.root)
    result = sample_for_annotation(store, sampling_inputs(cfg), "run-1")
    assert result.backlog.open == {"train": 0, "gold": 6, "review": 0}
    _answer(store, cfg, result.requests[:4])
    backlog = RequestLog.read(store).backlog()
    assert backlog.open["gold"] == 2 and backlog.answered == 4
    assert backlog.median_latency_s is not None and backlog.median_latency_s >= 0


@pytest.mark.parametrize("strategy", ["random", "kcenter", "cluster_margin"])
def test_every_train_strategy_runs_on_a_real_store(store_cfg, strategy):
    cfg = _cfg(store_cfg, **{"sampling.budget.train": 7, "sampling.strategy": strategy})
    result = sample_for_annotation(Store(cfg.store.root), sampling_inputs(cfg), "run-1")
    assert result.strategy == strategy and len(result.requests) == 7


def test_a_slice_is_asked_about_at_random_within_the_train_budget(store_cfg):
    cfg = _cfg(store_cfg, **{"sampling.budget.train": 3})
    store = Store(cfg.store.root)
    human = sorted(LatestLabels.read(store).human(cfg.taxonomy.classes))
    unlabeled = sorted(store.column_set(EXAMPLES, "example_id") - set(human))[:6]
    asked = Request(unlabeled[0], "train", "random", 1.0, "none")
    write_requests(store, [asked], run_id="run-0", batch_id="batch-0")

    # the slice: six unlabeled examples (one already asked about) and two labeled ones
    result = sample_slice(
        store, cfg.data_spec(), cfg.sampling, "run-1", [*unlabeled, *human[:2]], "drift"
    )
    picked = [r["example_id"] for r in result.requests]
    assert len(picked) == len(set(picked)) == 3 and set(picked) <= set(unlabeled[1:])
    assert {(r["stream"], r["strategy"], r["model_version"]) for r in result.requests} == {
        ("train", "drift", "none")
    }
    assert result.batch_id.endswith("-drift-run-1") and result.candidates == {"train": 5}
    assert {"metric": "requested: train", "value": "3 of 5"} in result.rows()
    assert result.backlog.open["train"] == 4  # the earlier request and these three


def test_the_drift_task_asks_about_the_drifted_batch(prefect_api, store_cfg):
    cfg = _cfg(store_cfg, **{"sampling.budget.train": 2})
    store = Store(cfg.store.root)
    human = LatestLabels.read(store).human(cfg.taxonomy.classes)
    newest = sorted(store.column_set(EXAMPLES, "example_id") - set(human))[:4]

    @flow
    def drifted():
        return sample_drifted(cfg.data_spec(), cfg.sampling, "run-1", newest)

    result = drifted()
    assert len(result.requests) == 2 and {r["example_id"] for r in result.requests} < set(newest)
    asked = RequestLog.read(store).requests
    assert {(r["stream"], r["strategy"]) for r in asked} == {("train", "drift")}
    assert sorted(r["example_id"] for r in asked) == sorted(
        r["example_id"] for r in result.requests
    )


def _champion(cfg, model) -> None:
    """`model` registered and promoted: the champion every copy of the store is scored by."""
    import mlflow
    import torch

    from tasks.registry.aliases import RegistryRef, promote, register_candidate
    from tasks.registry.model_format import log_classifier
    from tasks.tracking import ensure_experiment

    uri = cfg.mlflow.tracking_uri
    mlflow.set_tracking_uri(uri)
    ensure_experiment(uri, "sampling-runners")
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with mlflow.start_run():
        model_uri = log_classifier(model, cfg.taxonomy.classes, x)
    ref = RegistryRef(uri, cfg.mlflow.model_name)
    promote(ref, register_candidate(ref, model_uri, "run", {}), expected_champion=None)


def test_the_dask_scoring_path_stores_exactly_what_the_process_path_stores(
    prefect_api, store_cfg, small_model, tmp_path
):
    import shutil
    from datetime import UTC, datetime

    from distributed import LocalCluster

    _champion(store_cfg, small_model)
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    shards = {"sampling.shard_rows": 20, "sampling.workers": 2, "sampling.batch_rows": 8}
    budget = {
        "sampling.strategy": "cluster_margin",  # embeddings, and a draw after the merge
        "sampling.budget.train": 6,
        "sampling.budget.gold": 3,
    }
    stored = {}
    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        for runner in ("in-process", "processes", "dask"):
            root = tmp_path / f"store-{runner}"
            shutil.copytree(store_cfg.store.root, root)
            more = (
                {"sampling.workers": 1}
                if runner == "in-process"
                else {"sampling.runner": runner, "sampling.dask_address": cluster.scheduler_address}
            )
            cfg = _cfg(store_cfg, **{"store.root": str(root), **budget, **shards, **more})
            result = sample_for_annotation(Store(str(root)), sampling_inputs(cfg), "run-1", now=now)
            assert result.model_version.endswith("@v1")  # the champion scored
            assert result.candidates["train"] > 20  # more than one shard
            rows = RequestLog.read(Store(str(root))).requests
            stored[runner] = sorted(
                ({k: v for k, v in r.items() if k != "created_at"} for r in rows),
                key=lambda r: r["request_id"],
            )
    assert len(stored["dask"]) == 9
    assert stored["dask"] == stored["processes"] == stored["in-process"]
