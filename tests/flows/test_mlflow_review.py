"""What a reviewer finds in MLflow after two retrains, and the lineage of a version down
to its labels, as a user reads them: through MlflowClient and `semilabel lineage`."""

import json
from collections import Counter
from datetime import UTC, datetime

import mlflow
import pyarrow.compute as pc
import pytest

from flows.cli import main
from flows.cli_common import present
from flows.retrain import retrain
from flows.train import train
from tasks.store import LABELS, SNAPSHOTS, Store
from tests.conftest import digit_folder, label_events, tiny_run_overrides

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user's working folder; nothing may land in it but what the config names."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_two_retrains_leave_a_run_a_reviewer_can_read(prefect_api, tmp_path, home, capsys):
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    (tmp_path / "home").mkdir()
    ov = {
        **tiny_run_overrides(tmp_path, digit_folder(tmp_path / "images"), uri),
        "mlflow.model_name": "reviewed",
        "gate.min_gold_labels": 20,
    }
    first = retrain(overrides=ov)
    second = retrain(overrides=ov)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(second.mlflow_run_id)

    # The verdict first, in plain text, on the run and on the version. On ~30 gold test
    # labels a one-point non-inferiority cannot be shown: the second retrain is undecided,
    # and says so, with what would decide it.
    note = run.data.tags["mlflow.note.content"]
    first_line = note.splitlines()[0]
    assert first.decision == "promoted" and second.decision == "undecided"
    assert first_line.startswith("UNDECIDED: v2 is not promoted, the champion stays")
    assert "accuracy_vs_champion" in first_line
    assert "| accuracy_vs_champion | +0." in note or "| accuracy_vs_champion | -0." in note
    assert "*undecided*" in note and "| recall, 3 classes |" in note
    assert f"Next step: {second.next_step}" in note
    assert f"`{run.data.tags['semilabel.snapshot_id']}`" in note
    # the runs list tells them apart: the run name carries the version and its fate
    assert run.info.run_name.startswith("v2 undecided (train-")
    assert client.get_run(first.mlflow_run_id).info.run_name.startswith("v1 promoted (train-")
    version = client.get_model_version("reviewed", second.version)
    assert version.description == note
    assert "`champion` → v" in note
    # the link the CLI prints, whole, opens the run in its model-training view
    assert second.run_url.endswith(
        f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    )
    capsys.readouterr()
    present("retrain", second)
    assert f"Review it in the MLflow UI: {second.run_url}\n" in capsys.readouterr().out

    # datasets: the training snapshot and the gold snapshot, digests = snapshot ids
    inputs = {
        [t.value for t in d.tags if t.key == "mlflow.data.context"][0]: d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert inputs["training"].digest == run.data.tags["semilabel.snapshot_id"]
    assert inputs["eval"].digest == run.data.tags["semilabel.gold_snapshot_id"]
    assert json.loads(inputs["training"].source)["uri"] == ov["store.root"]

    # grouped metric names, no per-class charts, no phase chart
    names = set(run.data.metrics)
    assert {
        "train/loss",
        "train/loss_unsup",
        "train/mask_rate",
        "eval_gold/student_accuracy",
        "gate/accuracy",
        "gate/accuracy_low",
        "gate/accuracy_high",
        "gate/accuracy_vs_champion",
        "gate/accuracy_gain_low",
        "pseudo_labels/class_1",
    } <= names
    assert not [n for n in names if "/" not in n]
    assert not [n for n in names if "recall_class" in n] and "phase" not in names

    # the gate image and the per-class table; artifacts under the store's own home
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "gate")}
    assert {"gate/gate_checks.png", "gate/per_class.json"} <= artifacts
    expected_root = (tmp_path / "home" / "artifacts").as_uri()
    assert run.info.artifact_uri.startswith(expected_root)
    assert client.get_run(first.mlflow_run_id).info.artifact_uri.startswith(expected_root)
    assert not (home / "mlruns").exists() and not list(home.iterdir())


def test_lineage_counts_the_snapshots_label_events_and_time_travel_reproduces_it(
    prefect_api, tmp_path, home, capsys
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ov = {
        **tiny_run_overrides(tmp_path, digit_folder(tmp_path / "images"), uri),
        "mlflow.model_name": "traced",
        "gate.min_gold_labels": 20,
    }
    first = retrain(overrides=ov)
    store = Store(ov["store.root"])
    snapshot = (
        mlflow.MlflowClient(tracking_uri=uri)
        .get_run(first.mlflow_run_id)
        .data.tags["semilabel.snapshot_id"]
    )
    between = max(store.read(LABELS).column("created_at").to_pylist())

    # what the store holds for that snapshot, counted by hand
    items = store.read(SNAPSHOTS, filter=pc.field("snapshot_id") == snapshot).to_pylist()
    event_ids = {i["item_id"] for i in items if i["item_kind"] == "label_event"}
    events = [e for e in store.read(LABELS).to_pylist() if e["event_id"] in event_ids]
    by_source = Counter(e["source_name"] for e in events)
    assert (
        main(
            [
                "lineage",
                f"models:/traced/{first.version}",
                "--json",
                "--set",
                f"store.root={ov['store.root']}",
                "--set",
                f"mlflow.tracking_uri={uri}",
            ]
        )
        == 0
    )
    trace = json.loads(capsys.readouterr().out)
    assert trace["training"]["snapshot_id"] == snapshot
    assert trace["training"]["by_source"] == dict(by_source)
    assert trace["training"]["label_events"] == dict(Counter(e["source_kind"] for e in events))
    assert trace["compared_with"] == "none" and trace["gate"] == "passed"
    assert (
        main(
            [
                "lineage",
                "models:/traced@champion",
                "--set",
                f"store.root={ov['store.root']}",
                "--set",
                f"mlflow.tracking_uri={uri}",
            ]
        )
        == 0
    )
    assert f"Lineage of traced v{first.version}" in capsys.readouterr().out
    # the same summary is on the run
    logged = mlflow.artifacts.load_dict(f"runs:/{first.mlflow_run_id}/lineage.json")
    assert logged["training"]["by_source"] == dict(by_source)

    # a later labeling run changes what training reads...
    labeled = set(store.read(LABELS, ["example_id"]).column(0).to_pylist())
    unlabeled = [
        e for e in store.read("examples", ["example_id"]).column(0).to_pylist() if e not in labeled
    ][:5]
    assert len(unlabeled) == 5
    store.write(
        LABELS,
        label_events(
            [
                {
                    "event_id": f"late-{i}",
                    "example_id": ex,
                    "label": "1",
                    "source_name": "late-annotator",
                    "run_id": "late-import",
                    "created_at": datetime.now(UTC),
                }
                for i, ex in enumerate(unlabeled)
            ]
        ),
    )
    later = train(overrides=ov)
    assert later.snapshot_id != snapshot
    # a run no gate has seen yet says so first
    later_note = mlflow.MlflowClient(tracking_uri=uri).get_run(later.mlflow_run_id)
    assert later_note.data.tags["mlflow.note.content"].startswith("**TRAINED, not gated yet**")
    assert f"`{later.snapshot_id}`" in later_note.data.tags["mlflow.note.content"]
    # ...and training as of before it rebuilds exactly the earlier snapshot
    again = train(overrides={**ov, "train.as_of": between.isoformat()})
    assert again.snapshot_id == snapshot
