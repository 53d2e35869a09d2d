"""Weak labeling on a real store: functions, quarantine, provenance, idempotence.

The rules below are also the `python` labeling functions of the flow tests
(`tests.tasks.weak_labeling.test_run:<name>`)."""

import numpy as np
import pyarrow.compute as pc
import pytest

from configs.schema import load_config
from flows.weak_label import weak_label_inputs
from tasks.store import LABELS, Store
from tasks.weak_labeling import LabelingFunctionError, LFBatch, labeling_function
from tasks.weak_labeling.applier import apply_functions, apply_in_shards
from tasks.weak_labeling.label_model import ABSTAIN
from tasks.weak_labeling.run import weak_label_store
from tests.tasks.weak_labeling.conftest import store_overrides


def bar_position(batch: LFBatch) -> np.ndarray:
    """A good rule: the class is which third of the image holds the bright bar."""
    cols = batch.images[:, 0].astype(np.int32).sum(1)  # (B, W)
    thirds = np.stack([cols[:, 2 + 9 * c : 7 + 9 * c].sum(1) for c in range(3)], 1)
    return thirds.argmax(1)


def coin_flip(batch: LFBatch) -> np.ndarray:
    """A bad rule: random classes."""
    seed = int.from_bytes(bytes.fromhex(batch.example_ids[0][:8]), "big")
    return np.random.default_rng(seed).integers(0, 3, len(batch))


def dark_abstains(batch: LFBatch) -> np.ndarray:
    """Votes only on a third of the rows; abstains elsewhere."""
    out = bar_position(batch)
    return np.where(np.arange(len(batch)) % 3 == 0, out, ABSTAIN)


def bar_left(batch: LFBatch) -> np.ndarray:
    """One rule per class, as users write them: class 0 when the bar is in the left third,
    abstain otherwise (and `bar_middle`, `bar_right` for classes 1 and 2)."""
    return np.where(bar_position(batch) == 0, 0, ABSTAIN)


def bar_middle(batch: LFBatch) -> np.ndarray:
    return np.where(bar_position(batch) == 1, 1, ABSTAIN)


def bar_right(batch: LFBatch) -> np.ndarray:
    return np.where(bar_position(batch) == 2, 2, ABSTAIN)


FUNCS = [
    {"name": "bar", "kind": "python", "target": "tests.tasks.weak_labeling.test_run:bar_position"},
    {"name": "coin", "kind": "python", "target": "tests.tasks.weak_labeling.test_run:coin_flip"},
    {
        "name": "sparse",
        "kind": "python",
        "target": "tests.tasks.weak_labeling.test_run:dark_abstains",
    },
    {"name": "knn", "kind": "knn", "embedding": "pixels", "k": 3, "min_agreement": 1.0},
]


def test_bad_function_is_quarantined_and_labels_carry_provenance(store_cfg):  # noqa: F811
    cfg = load_config(
        overrides={
            **store_overrides(store_cfg),
            "weak_labeling.functions": FUNCS,
            "weak_labeling.min_gold_covered": 10,
        }
    )
    summary = weak_label_store(weak_label_inputs(cfg), "run-A")
    by_name = {f.name: f for f in summary.functions}
    assert by_name["coin"].quarantined and "below its floor 0.6" in by_name["coin"].reason
    assert by_name["coin"].gold_accuracy < 0.5
    assert not by_name["bar"].quarantined and by_name["bar"].gold_accuracy == 1.0
    assert by_name["bar"].coverage == 1.0
    assert by_name["sparse"].coverage == pytest.approx(1 / 3, abs=0.02)
    assert summary.gold_accuracy == 1.0  # the quarantined coin flips are ignored
    assert summary.events_written > 0

    events = Store(cfg.store.root).read(LABELS).filter(pc.field("source_kind") == "label_model")
    assert events.num_rows == summary.events_written
    assert set(events.column("run_id").to_pylist()) == {"run-A"}
    names = set(events.column("source_name").to_pylist())
    assert len(names) == 1 and next(iter(names)).startswith("dawid_skene:")
    conf = np.array(events.column("confidence").to_pylist())
    assert ((conf > 0) & (conf <= 1)).all()

    # The same flow on the same data writes nothing twice.
    again = weak_label_store(weak_label_inputs(cfg), "run-B")
    assert (again.events_written, again.events_already_present) == (0, summary.events_written)
    assert (
        Store(cfg.store.root).read(LABELS).filter(pc.field("source_kind") == "label_model").num_rows
        == summary.events_written
    )


def test_one_rule_per_class_labels_every_row_its_rule_names(store_cfg):
    # Three rules that never vote on the same row, each naming one class: the label model
    # learns each from where it abstains (it gave one class to every row before).
    rules = [
        {"name": name, "kind": "python", "target": f"tests.tasks.weak_labeling.test_run:{name}"}
        for name in ("bar_left", "bar_middle", "bar_right")
    ]
    cfg = load_config(
        overrides={
            **store_overrides(store_cfg),
            "weak_labeling.functions": rules,
            "weak_labeling.min_gold_covered": 5,
        }
    )
    summary = weak_label_store(weak_label_inputs(cfg), "run-rules")
    assert summary.label_model == "dawid_skene"
    assert not any(f.quarantined for f in summary.functions)
    assert [f.gold_accuracy for f in summary.functions] == [1.0, 1.0, 1.0]
    assert summary.coverage == 1.0 and summary.gold_accuracy == 1.0

    store = Store(cfg.store.root)
    events = store.read(LABELS).filter(pc.field("run_id") == "run-rules").to_pylist()
    assert summary.events_written == len(events) > 0
    bar = labeling_function(name="bar")(bar_position)
    votes = apply_in_shards(store, cfg.data_spec(), cfg.weak_labeling, [bar], "truth")
    truth = dict(zip(votes.example_ids, votes.votes[:, 0], strict=True))
    classes = list(cfg.taxonomy.classes)
    assert all(e["label"] == classes[truth[e["example_id"]]] for e in events)
    assert len({e["label"] for e in events}) == 3
    assert min(e["confidence"] for e in events) > 0.95


def test_a_function_returning_garbage_is_named_with_the_record():
    @labeling_function(name="broken")
    def broken(batch):
        return np.full(len(batch), 7)

    batch = LFBatch(["ex-1", "ex-2"], np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(LabelingFunctionError, match=r"'broken' returned 7 for example ex-1"):
        apply_functions(iter([batch]), [broken], 3)

    @labeling_function(name="short")
    def short(batch):
        return np.zeros(1)

    with pytest.raises(LabelingFunctionError, match="one class index"):
        apply_functions(iter([batch]), [short], 3)


def test_a_model_kind_function_cannot_push_model_derived_labels_over_the_cap(store_cfg):
    # A labeling function backed by a model feeds the label model; the label model's
    # labels then carry the model's influence and share `labels.max_model_share` with
    # the model's own predictions, instead of passing as plain `label_model` labels.
    from tasks.registry.aliases import RegistryRef
    from tasks.training import load_training_data
    from tests.tasks.registry.test_aliases import register

    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "lf-model")
    version = register(ref)
    cfg = load_config(
        overrides={
            **store_overrides(store_cfg),
            "labels.max_model_share": 0.2,
            "weak_labeling.functions": [
                {
                    "name": "champ",
                    "kind": "model",
                    "model_uri": f"models:/lf-model/{version}",
                    "min_confidence": 0.0,  # votes on every row
                    "accuracy_floor": 0.0,
                }
            ],
        }
    )
    summary = weak_label_store(weak_label_inputs(cfg), "run-M")
    events = Store(cfg.store.root).read(LABELS).filter(pc.field("source_kind") == "label_model")
    assert events.num_rows == summary.events_written > 0
    assert all(events.column("model_influenced").to_pylist())
    training = load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)
    n_labels = training.n_human + training.n_weak
    assert training.n_weak == training.n_model_influenced > 0  # some, within the cap
    assert training.n_model_influenced / n_labels <= 0.2
    uncapped = summary.events_written  # what the old resolution would have trained on
    assert uncapped / (training.n_human + uncapped) > 0.2


def _weak_labels(store: Store, as_of=None) -> dict[str, str]:
    """example -> source name of its weak label in force, as label resolution reads it."""
    from tasks.store import LatestLabels

    latest = LatestLabels.read(store, as_of).by_kind["label_model"]
    names = (latest.column(c).to_pylist() for c in ("example_id", "source_name"))
    return dict(zip(*names, strict=True))


def _trainable(cfg, examples) -> int:
    """How many of `examples` training takes a weak label for: no human label, not gold."""
    from tasks.store import GoldSplit, LatestLabels

    human = LatestLabels.read(Store(cfg.store.root)).human(cfg.taxonomy.classes)
    ids = sorted(examples)
    gold = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share).is_gold(ids)
    return sum(1 for e, g in zip(ids, gold, strict=True) if not g and e not in human)


def _n_weak(store: Store, cfg) -> int:
    """How many weak labels training reads under `cfg`."""
    from tasks.training import load_training_data

    return load_training_data(store, cfg.data_spec(), cfg.train, cfg.labels).n_weak


def test_the_latest_label_model_run_is_the_whole_truth_of_weak_labels(store_cfg):
    # Run 1 labels every row with `bar`. Run 2 drops `bar` and keeps only `sparse`, which
    # abstains on two rows of three: the labels `bar` alone gave must go, in resolution,
    # in training and in time travel; a run 3 with `bar` back gives them back.
    from tasks.store import utcnow

    def cfg_with(functions, **extra):
        return load_config(
            overrides={
                **store_overrides(store_cfg),
                "weak_labeling.functions": functions,
                "labels.confidence_floor": 0.0,
                "labels.max_model_share": 1.0,
                **extra,
            }
        )

    store = Store(store_cfg.store.root)
    weak_label_store(weak_label_inputs(cfg_with([FUNCS[0]])), "run-1")
    first = _weak_labels(store)
    assert len(first) > 30 and len(set(first.values())) == 1
    between = utcnow()

    second = weak_label_store(weak_label_inputs(cfg_with([FUNCS[2]])), "run-2")
    events = store.read(LABELS).filter(pc.field("run_id") == "run-2").to_pylist()
    voted = {e["example_id"] for e in events if e["label"] is not None}
    now = _weak_labels(store)
    assert set(now) == voted  # nothing survives from run 1 where run 2 abstains
    assert 0 < len(now) < len(first) / 2 and len(set(now.values())) == 1
    assert set(first.values()).isdisjoint(now.values())  # another set of functions
    assert second.events_written == len(voted) + len(first) - len(set(first) & voted)
    # time travel: before run 2, run 1's labels; after it, run 2's
    assert _weak_labels(store, between) == first
    assert _weak_labels(store, utcnow()) == now
    # training reads the same: now, and as of before run 2
    cfg = cfg_with([FUNCS[2]])
    assert 0 < _n_weak(store, cfg) == _trainable(cfg, now)
    past = cfg_with([FUNCS[2]], **{"train.as_of": between.isoformat()})
    assert _n_weak(store, past) == _trainable(cfg, first) > _trainable(cfg, now)

    # the same run again changes nothing and writes nothing
    again = weak_label_store(weak_label_inputs(cfg_with([FUNCS[2]])), "run-2b")
    assert again.events_written == 0 and _weak_labels(store) == now
    # `bar` back: its labels are back, all of them from run 3's source
    weak_label_store(weak_label_inputs(cfg_with([FUNCS[0]])), "run-3")
    assert _weak_labels(store) == first


def test_the_analysis_is_logged_as_an_mlflow_run(store_cfg):
    import json
    from pathlib import Path

    import mlflow

    cfg = load_config(
        overrides={**store_overrides(store_cfg), "weak_labeling.functions": [FUNCS[0]]}
    )
    summary = weak_label_store(weak_label_inputs(cfg), "run-logged")
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id],
        "tags.`semilabel.stage` = 'weak_label'",
    )
    assert run.info.run_name == "weak-label-run-logg"
    metrics = run.data.metrics
    assert metrics["lf.bar.coverage"] == 1.0 and metrics["lf.bar.quarantined"] == 0.0
    assert metrics["label_model.events_written"] == summary.events_written > 0
    assert metrics["label_model.gold_accuracy"] == summary.gold_accuracy
    local = client.download_artifacts(run.info.run_id, "lf_analysis.json")
    assert json.loads(Path(local).read_text()) == {"functions": summary.table()}
