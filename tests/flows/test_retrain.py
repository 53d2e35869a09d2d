"""The retrain pipeline end to end, as a user runs it: real Prefect flow runs, a real
store, and a real MLflow — the SQLite store and a tracking server started here."""

from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest
import torch

from flows.monitor import monitor
from flows.retrain import retrain
from flows.rollback import rollback
from tasks.registry.aliases import CHAMPION, PREVIOUS_CHAMPION, RollbackError
from tasks.store import LABELS, Store, gold_mask
from tests.conftest import (
    digit_folder,
    free_port,
    label_events,
    start_mlflow_server,
    tiny_run_overrides,
)

pytestmark = pytest.mark.slow
NAME = "semilabel-test"
RULES = "tests.tasks.weak_labeling.test_run"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _overrides(tmp_path: Path, tracking_uri: str) -> dict:
    folder = digit_folder(tmp_path / "images")
    return {
        **tiny_run_overrides(tmp_path, folder, tracking_uri),
        "mlflow.model_name": NAME,
        "gate.min_gold_labels": 20,
        "monitor.min_gold_labels": 20,
        # ~30 gold test labels: enough to show a floor of 0.8, not to show a one-point
        # non-inferiority (bench/gate.py); the comparison is tested at a 0.2 margin here.
        "gate.floors.accuracy": 0.8,
        "gate.floors.macro_f1": 0.8,
        "gate.max_regression.accuracy": 0.2,
        "gate.max_regression.macro_f1": 0.2,
    }


def get_client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _spoil_gold_labels(store_root: str, gold_fraction: float) -> int:
    """New human label events that relabel most gold examples wrongly (a correction
    batch), so the champion now looks worse on gold than it did at its gate."""
    store = Store(store_root)
    labels = store.read(LABELS).to_pylist()
    ids = [r["example_id"] for r in labels]
    gold = gold_mask(ids, gold_fraction, "gold-v1")
    rows = [r for r, g in zip(labels, gold, strict=True) if g][::2]  # half of gold
    now = datetime.now(UTC)
    table = label_events(
        [
            {
                "event_id": f"fix-{i}",
                "example_id": r["example_id"],
                "label": str((int(r["label"]) + 1) % 3),
                "source_name": "reviewer-7",
                "created_at": now,
                "run_id": "review",
            }
            for i, r in enumerate(rows)
        ]
    )
    store.write(LABELS, table)
    return len(rows)


@pytest.mark.parametrize("backend", ["sqlite", "server"])
def test_promote_reject_monitor_rollback(backend, prefect_api, tmp_path: Path, request):
    uri = (
        f"sqlite:///{tmp_path / 'mlflow.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("mlflow_server")
    )
    ov = _overrides(tmp_path, uri)
    client = get_client(uri)

    # A manual rollback with no champion at all fails with a clear message.
    with pytest.raises(RollbackError, match="has no champion"):
        rollback(overrides=ov)

    first = retrain(overrides=ov)
    assert (first.decision, first.version, first.champion_version) == ("promoted", "1", "1")
    assert first.gold_accuracy >= 0.9
    v1 = client.get_model_version(NAME, "1")
    assert v1.tags["semilabel.gate"] == "passed"
    for tag in (
        "semilabel.snapshot_id",
        "semilabel.gold_snapshot_id",
        "semilabel.code_version",
        "gate.accuracy",
        "gate.macro_f1",
        "gate.ece",
        "gate.n_gold",
    ):
        assert v1.tags.get(tag), tag
    run = client.get_run(v1.run_id)
    artifacts = {a.path for a in client.list_artifacts(v1.run_id, "gate")}
    assert artifacts == {
        "gate/gate_report.md",
        "gate/gate_report.json",
        "gate/gate_checks.png",
        "gate/per_class.json",
        "gate/confusion_matrix.png",
        "gate/reliability_diagram.png",
    }
    assert run.data.metrics["gate/accuracy"] == pytest.approx(first.gold_accuracy)
    # label health: SLIs on the run (grouped under sli/) and in the store's history
    assert run.data.metrics["sli/label_coverage_ratio"] > 0
    assert run.data.metrics["sli/gate_passed"] == 1.0
    slis = Store(ov["store.root"]).read("slis").to_pylist()
    assert {r["flow"] for r in slis} == {"retrain"} and any(
        r["metric"] == "pseudo_label_precision_ratio" for r in slis
    )

    # The champion loads through its alias URI and predicts class probabilities.
    mlflow.set_tracking_uri(uri)
    champ = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    out = champ.predict(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8).numpy())
    probs = out.drop(columns="label")
    assert list(probs.columns) == ["0", "1", "2"]
    assert probs.shape == (2, 3) and abs(float(probs.to_numpy().sum()) - 2.0) < 1e-5
    assert list(out["label"]) == list(probs.idxmax(axis=1))

    # A sabotaged candidate that clears every floor (set low here) but is far worse than
    # the champion: registered, tagged rejected, not promoted, champion untouched.
    lenient_floors = {
        "gate.floors.accuracy": 0.05,
        "gate.floors.macro_f1": 0.01,
        "gate.min_class_recall": None,
    }
    bad = retrain(overrides={**ov, **lenient_floors, "train.shuffle_labels": True})
    assert (bad.decision, bad.version, bad.champion_version) == ("rejected", "2", "1")
    assert bad.gate_summary.startswith("rejected: accuracy_vs_champion -0.")
    assert "upper bound" in bad.gate_summary  # worse beyond noise, not by a point estimate
    assert "_floor" not in bad.gate_summary  # it failed on the comparison alone
    v2 = client.get_model_version(NAME, "2")
    assert v2.tags["semilabel.gate"] == "rejected" and v2.tags["semilabel.champion_at_gate"] == "1"
    assert v2.tags["semilabel.promotion"].startswith("not promoted: rejected")
    assert "semilabel.promoted_at" not in v2.tags

    third = retrain(overrides=ov)
    assert (third.decision, third.champion_version, third.previous_champion) == (
        "promoted",
        "3",
        "1",
    )
    assert "no significant gain" in third.reason  # the same data, the same model
    assert str(client.get_model_version_by_alias(NAME, PREVIOUS_CHAMPION).version) == "1"

    # Monitoring with healthy gold does nothing...
    assert monitor(overrides=ov).action == "ok"
    # ...and after a batch of gold corrections makes the champion look worse, it does
    # not walk it back: v1, which a rollback would restore, was trained on the same data
    # and is just as worse on the same gold. The gold moved, not the model: no rollback,
    # a label-health alert.
    assert _spoil_gold_labels(ov["store.root"], 0.3) > 10
    report = monitor(overrides=ov)
    assert (report.action, report.champion_version, report.rolled_back_to) == (
        "gold_shifted",
        "3",
        None,
    )
    assert report.bounds["accuracy"].high < report.baseline["accuracy"] - 0.02
    assert "v1, the version a rollback would restore, is no better" in report.detail
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "3"
    assert "semilabel.rolled_back" not in client.get_model_version(NAME, "3").tags
    shift = [
        r for r in Store(ov["store.root"]).read("slis").to_pylist() if r["metric"] == "gold_shift"
    ]
    assert shift and shift[-1]["value"] == 1.0 and shift[-1]["breached"]
    assert "gold_shift" in report.label_health
    # A second run finds the same and still moves nothing: no cascade, one version a run.
    assert monitor(overrides=ov).action == "gold_shifted"
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "3"

    # A person who decides the model is to blame rolls back by hand, to the last passing
    # version (v1, skipping the rejected v2).
    assert rollback(overrides=ov, reason="test").to_version == "1"
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"
    v3 = client.get_model_version(NAME, "3")
    assert v3.tags["semilabel.rolled_back"] == "true"

    # Nothing passing before v1: a manual rollback now fails and says why.
    with pytest.raises(RollbackError, match="no earlier passing version.*stays at version 1"):
        rollback(overrides=ov, reason="test")
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"


def test_retrain_with_weak_labeling_trains_on_label_model_labels(prefect_api, tmp_path: Path):
    ov = {
        **_overrides(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}"),
        "store.rows_per_file": 100,  # 300 rows in 3 files -> 3 shards on 2 worker processes
        "weak_labeling.enabled": True,
        "weak_labeling.functions": [
            {"name": "bar", "kind": "python", "target": f"{RULES}:bar_position"},
            {"name": "knn", "kind": "knn", "embedding": "pixels", "k": 3, "min_agreement": 1.0},
        ],
        "weak_labeling.shard_rows": 100,
        "weak_labeling.workers": 2,
        "weak_labeling.min_gold_covered": 10,
    }
    state = retrain(overrides=ov, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.decision == "promoted"

    # The label model's events carry this flow run's id, and training used them.
    run_id = str(state.state_details.flow_run_id)
    events = Store(ov["store.root"]).read(LABELS).to_pylist()
    weak = [e for e in events if e["source_kind"] == "label_model"]
    assert weak and {e["run_id"] for e in weak} == {run_id}
    ids = Store(ov["store.root"]).read("examples", ["example_id"]).column(0).to_pylist()
    non_gold = {e for e, g in zip(ids, gold_mask(ids, 0.3, "gold-v1"), strict=True) if not g}
    assert {e["example_id"] for e in weak} == non_gold  # `bar` votes on every row
    params = get_client(ov["mlflow.tracking_uri"]).get_run(result.mlflow_run_id).data.params
    assert int(params["data.n_weak"]) > 0
    matrix = Path(ov["store.root"]) / "label_matrices" / f"run={run_id}"
    assert sorted(p.name for p in matrix.iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]


def _answer_gold_requests(export_dir: Path, store_root: str, out: Path) -> int:
    """A person answers every exported gold task truthfully: a digit_folder image's class
    is its file number mod 3. Returns how many were answered."""
    import csv

    uris = dict(
        zip(
            *Store(store_root).read("examples", ["example_id", "source_uri"]).to_pydict().values(),
            strict=True,
        )
    )
    rows = []
    for path in sorted(export_dir.glob("*.csv")):
        for r in csv.DictReader(path.read_text().splitlines()):
            if r["stream"] == "gold" and not r["label"]:
                number = int(Path(uris[r["example_id"]]).stem)
                rows.append({**r, "label": str(number % 3), "annotator": "dana"})
        path.unlink()  # answered
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def _gold_without_human_label(store_root: str) -> int:
    from tasks.store import GoldSplit, LatestLabels

    store = Store(store_root)
    ids = set(store.read("examples", ["example_id"]).column(0).to_pylist())
    human = LatestLabels.read(store).human(["0", "1", "2"])
    gold = GoldSplit(0.3, "gold-v1", 0.5).is_gold(sorted(ids))
    return sum(1 for e, g in zip(sorted(ids), gold, strict=True) if g and e not in human)


def test_small_data_undecided_then_sample_answer_import_until_the_gold_pool_runs_dry(
    prefect_api, tmp_path: Path, capsys
):
    import json
    import math

    from flows.cli import main
    from tasks.sampling.requests import RequestLog

    export_dir = tmp_path / "annotation"
    ov = {
        **_overrides(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}"),
        "mlflow.model_name": "walk",
        "sampling.mode": "export",
        "sampling.budget.train": 0,
        "sampling.export_dir": str(export_dir),
    }
    root = ov["store.root"]

    # 1. The gate asks for 40 gold test labels: undecided, and the retrain itself requests
    # the gold that would most likely decide it (twice the shortfall: half lands in test).
    first = retrain(overrides={**ov, "gate.min_gold_labels": 40})
    n_test = first.gold_sizes["test"]
    need = 40 - n_test
    assert need > 0
    pool = _gold_without_human_label(root)
    ask = min(pool, math.ceil(need / 0.5))
    assert (first.decision, first.champion_version, first.gold_labels_requested) == (
        "undecided",
        None,
        ask,
    )
    assert f"About {need} more gold test labels would most likely decide it" in first.next_step
    assert f"--set sampling.budget.gold={ask} --set sampling.budget.train=0" in first.next_step
    requests = RequestLog.read(Store(root)).requests
    assert sum(r["stream"] == "gold" for r in requests) == ask
    assert first.next_labels.startswith(f"{ask} requests (export)")

    # 2. A person answers them; import; the gate asks for more than the pool holds.
    answers = tmp_path / "answers.csv"
    assert _answer_gold_requests(export_dir, root, answers) == ask
    assert main(["annotate", "import", "--file", str(answers), "--set", f"store.root={root}"]) == 0
    left = _gold_without_human_label(root)
    assert left == pool - ask
    sets = [a for k, v in ov.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    capsys.readouterr()
    assert main(["retrain", *sets, "--set", "gate.min_gold_labels=80"]) == 0
    printed = capsys.readouterr().out
    assert "retrain: undecided" in printed
    # The next step is printed whole, however long: the command and that it won't do.
    flat = " ".join(printed.replace("│", " ").split())
    assert f"--set sampling.budget.gold={left} --set sampling.budget.train=0" in flat
    assert f"That is every gold example still unlabeled ({left}): it will not be enough." in flat

    # 3. Answered too: the pool is exhausted, and the gate says what else would decide.
    assert _answer_gold_requests(export_dir, root, answers) == left
    assert main(["annotate", "import", "--file", str(answers), "--set", f"store.root={root}"]) == 0
    third = retrain(overrides={**ov, "gate.min_gold_labels": 80})
    assert third.decision == "undecided" and third.gold_labels_requested == 0
    assert "but the gold pool is exhausted: every gold example already has a human label" in (
        third.next_step
    )
    assert (
        "more images give" in third.next_step and "raise gold.fraction from 0.3" in third.next_step
    )

    # 4. With the evidence the gold now holds, the default-sized gate decides: promoted.
    fourth = retrain(overrides=ov)
    assert (fourth.decision, fourth.champion_version) == ("promoted", fourth.version)
    assert fourth.gold_sizes["test"] > n_test


def test_a_step_that_fails_after_promotion_leaves_a_completed_run_with_a_warning(
    prefect_api, tmp_path: Path
):
    """The champion moved; the label-health push then fails (no Pushgateway there) even
    when retried: the retrain completes, promoted, and its state says what failed."""
    closed = free_port()  # a port nothing listens on
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = {
        **_overrides(tmp_path, uri),
        "metrics.pushgateway_url": f"http://127.0.0.1:{closed}",
    }
    state = retrain(overrides=overrides, return_state=True)
    assert state.is_completed(), state.message
    decision = state.result()
    assert decision.promoted and decision.champion_version == decision.version
    (warning,) = decision.warnings
    assert warning.startswith("the label-health push failed: could not push label-health metrics")
    assert "(try 3 of 3)" in warning and "the SLIs are in the store and in MLflow" in warning
    assert state.message == f"{NAME} v{decision.version} promoted; {warning}"
    assert {"metric": "warning", "value": warning} in decision.rows()
    version = get_client(uri).get_model_version_by_alias(NAME, CHAMPION)
    assert str(version.version) == decision.version
