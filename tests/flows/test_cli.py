"""The `semilabel` command line (flows/cli.py) as a user runs it: `semilabel init` then
`semilabel retrain --config FILE` on a folder of colour photos with named classes (no
other key needed), and `semilabel labels export` writing what training reads."""

import json
from pathlib import Path

import mlflow
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch

from flows.cli import main
from tasks.registry.model_format import load_classifier
from tasks.store import Store
from tasks.store.export import read_training_labels
from tests.conftest import COLOUR_CLASSES, colour_folder

FAST = [  # only how long it trains: every data setting comes from the init config
    "train.teacher_steps=30",
    "train.student_steps=30",
    "train.batch_size=8",
    "train.uratio=2",
    "train.eval_every=30",
    "train.checkpoint_every=0",
    "train.device=cpu",
    "ingest.workers=1",
]


def _as_manifest(folder: Path) -> Path:
    """The same images listed in a CSV manifest beside them (label empty: unlabeled)."""
    rows = ["path,label"]
    for p in sorted(folder.rglob("*.*")):
        rel = p.relative_to(folder)
        label = "" if rel.parts[0] == "unlabeled" else rel.parts[0]
        rows.append(f'"{rel}",{label}')
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return folder / "images.csv"


@pytest.mark.slow
@pytest.mark.parametrize("source", ["image_folder", "manifest"])
def test_init_then_retrain_runs_on_your_own_images(
    prefect_api, tmp_path: Path, monkeypatch, capsys, source
):
    folder = colour_folder(tmp_path / "shop photos", n=180, n_labeled=120)
    path = folder if source == "image_folder" else _as_manifest(folder)
    monkeypatch.chdir(tmp_path)  # the starter config's store and MLflow paths are relative
    assert main(["init", str(path), "--out", "semilabel.yaml"]) == 0
    said = capsys.readouterr().out
    assert f"182 images in {path} ({source})" in said and "left bar: 41 labeled" in said
    assert "image modes (all): RGB 180, L 1, RGBA 1" in said
    assert "next: semilabel retrain --config semilabel.yaml" in said
    assert main(["init", str(path), "--out", "semilabel.yaml"]) == 2  # never overwritten

    # the starter config's relative MLflow store, made absolute: MLflow keeps one store
    # per URI in a process, and both cases run in this one
    db = f"sqlite:///{tmp_path / '.semilabel' / 'mlflow.db'}"
    args = ["retrain", "--config", "semilabel.yaml", "--set", f"mlflow.tracking_uri={db}"]
    for item in FAST:
        args += ["--set", item]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "registered" in said and "shop-photos-classifier v1" in said

    model = load_classifier("models:/shop-photos-classifier/1", db)
    assert (model.config.in_channels, model.config.num_classes) == (3, 3)
    # median shorter side 63 px: 48, capped at 32 without a GPU
    assert model.config.image_size == (48 if torch.cuda.is_available() else 32)
    mlflow.set_tracking_uri(db)
    mlflow.set_registry_uri(db)
    meta = mlflow.pyfunc.load_model("models:/shop-photos-classifier/1").metadata
    assert meta.metadata["classes"] == sorted(COLOUR_CLASSES)


def _sets(cfg) -> list[str]:
    return [
        "--set",
        f"store.root={cfg.store.root}",
        "--set",
        f"taxonomy.classes={json.dumps(list(cfg.taxonomy.classes))}",
        "--set",
        f"gold.fraction={cfg.gold.fraction}",
    ]


def test_labels_export_writes_what_training_reads(store_cfg, tmp_path, capsys):
    cfg = store_cfg
    store = Store(cfg.store.root)
    expected = read_training_labels(store, cfg.data_spec(), cfg.labels, as_of=cfg.train.as_of)
    out = tmp_path / "labels.parquet"
    assert main(["labels", "export", "--out", str(out), *_sets(store_cfg)]) == 0
    got = pq.read_table(out)
    assert got.num_rows == expected.num_rows > 0
    assert set(got.column("event_id").to_pylist()) == set(expected.column("event_id").to_pylist())
    assert f"{expected.num_rows} training labels" in capsys.readouterr().out

    # as of an instant before anything was labeled: nothing
    early = tmp_path / "early.csv"
    args = ["labels", "export", "--out", str(early), "--as-of", "2000-01-01T00:00Z"]
    assert main([*args, *_sets(store_cfg)]) == 0
    assert pcsv.read_csv(early).num_rows == 0


def test_labels_export_to_an_unknown_format_is_a_usage_error(store_cfg, tmp_path, capsys):
    out = tmp_path / "labels.json"
    assert main(["labels", "export", "--out", str(out), *_sets(store_cfg)]) == 2
    assert ".parquet" in capsys.readouterr().err and not out.exists()
