"""`semilabel labels export`: the resolved training labels written to a file."""

import json

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from flows.cli import main
from tasks.store import Store
from tasks.store.export import read_training_labels


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
