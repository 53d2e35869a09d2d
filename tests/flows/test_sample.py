"""The loop as a user runs it: `semilabel sample` writes the tasks, a person fills in the
CSV, `semilabel annotate import` reads it back; a retrain with sampling on ends with
the next batch requested."""

import csv
import json
from pathlib import Path

from flows.cli import main
from flows.retrain import retrain
from tasks.sampling.requests import RequestLog
from tasks.store import LatestLabels, Store
from tests.conftest import digit_folder, tiny_run_overrides


def _sets(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]


def test_sample_export_then_import_the_filled_csv(prefect_api, store_cfg, tmp_path, capsys):
    out = tmp_path / "annotation"
    ov = {
        "store.root": store_cfg.store.root,
        "taxonomy.classes": ["0", "1", "2"],
        "gold.fraction": 0.3,
        "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
        "train.device": "cpu",
        "sampling.mode": "export",
        "sampling.budget.train": 6,
        "sampling.budget.gold": 4,
        "sampling.cold_start_steps": 30,
        "sampling.export_dir": str(out),
    }
    assert main(["sample", *_sets(ov)]) == 0
    printed = capsys.readouterr().out
    assert "requested: train" in printed and "6 of" in printed
    (tasks_json,) = out.glob("*.tasks.json")
    (answers_csv,) = out.glob("*.csv")
    assert len(json.loads(tasks_json.read_text())) == 10
    # a person labels the CSV (here: everything "1", by "carol")
    rows = list(csv.DictReader(answers_csv.read_text().splitlines()))
    filled = tmp_path / "filled.csv"
    with open(filled, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        for r in rows:
            w.writerow({**r, "label": "1", "annotator": "carol"})
    assert main(["annotate", "import", "--file", str(filled), *_sets(ov)]) == 0
    assert "label events written" in capsys.readouterr().out
    store = Store(ov["store.root"])
    human = LatestLabels.read(store).human(ov["taxonomy.classes"])
    assert all(human[r["example_id"]][0] == "1" for r in rows)
    assert RequestLog.read(store).backlog().open == {"train": 0, "gold": 0, "review": 0}
    # nothing open: `annotate export` says so
    assert main(["annotate", "export", *_sets(ov)]) == 0
    assert "no open requests" in capsys.readouterr().out


def test_a_retrain_with_sampling_on_ends_with_the_next_batch_requested(prefect_api, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ov = {
        **tiny_run_overrides(tmp_path, digit_folder(tmp_path / "images"), uri),
        "mlflow.model_name": "sampled",
        "gate.min_gold_labels": 20,
        "sampling.mode": "export",
        "sampling.budget.train": 5,
        "sampling.export_dir": str(tmp_path / "annotation"),
    }
    decision = retrain(overrides=ov)
    assert decision.promoted
    assert decision.next_labels.startswith("5 requests (export)")
    log = RequestLog.read(Store(ov["store.root"]))
    assert [r["model_version"] for r in log.requests] == ["sampled@v1"] * 5  # the new champion
    assert len(list(Path(tmp_path / "annotation").glob("*.tasks.json"))) == 1
