"""Exporting the resolved training labels: exactly what training reads, now or as of then."""

from datetime import UTC, datetime, timedelta

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from configs.schema import load_config
from tasks.store import LABELS, Store, content_id, gold_mask
from tasks.store.export import EXPORT_COLUMNS, ExportError, export_labels, read_training_labels
from tasks.training import load_training_data
from tests.conftest import digit_png, label_events

LATER = datetime(2030, 1, 1, tzinfo=UTC)


def _add_weak_labels(cfg) -> list[str]:
    """Label-model labels on the unlabeled, non-gold examples of `store_cfg`, created at
    LATER; half of them below the confidence floor. Returns the confident ones' ids."""
    unlabeled = [content_id(digit_png(i % 3, i)) for i in range(150, 240)]
    gold = gold_mask(unlabeled, cfg.gold.fraction, cfg.gold.salt)
    rows = [
        {
            "event_id": f"lm{i}",
            "example_id": e,
            "label": str(i % 3),
            "source_kind": "label_model",
            "source_name": "dawid_skene:abc",
            "confidence": 0.9 if i % 2 == 0 else 0.5,
            "created_at": LATER,
        }
        for i, (e, g) in enumerate(zip(unlabeled, gold, strict=True))
        if not g
    ]
    rows.append(  # a label for an example the store does not hold: training cannot read it
        {**rows[0], "event_id": "ghost", "example_id": "not-in-the-store", "confidence": 1.0}
    )
    Store(cfg.store.root).write(LABELS, label_events(rows))
    return sorted(r["example_id"] for r in rows[:-1] if r["confidence"] >= 0.8)


def test_the_export_is_exactly_what_training_reads(store_cfg, tmp_path):
    cfg = store_cfg
    weak = _add_weak_labels(cfg)
    store = Store(cfg.store.root)
    table = read_training_labels(store, cfg.data_spec(), cfg.labels, as_of=cfg.train.as_of)
    training = load_training_data(store, cfg.data_spec(), cfg.train, cfg.labels)
    assert sorted(table.column("event_id").to_pylist()) == sorted(
        training.label_event_ids.to_pylist()
    )
    assert sorted(table.column("example_id").to_pylist()) == sorted(
        training.labeled_ids.to_pylist()
    )
    kinds = table.column("source_kind").to_pylist()
    assert kinds.count("label_model") == len(weak) == training.n_weak
    assert kinds.count("human") == training.n_human

    for name in ("labels.parquet", "labels.csv"):
        summary = export_labels(
            store, cfg.data_spec(), cfg.labels, tmp_path / "out" / name, as_of=cfg.train.as_of
        )
        path = tmp_path / "out" / name
        read = pq.read_table(path) if name.endswith(".parquet") else pcsv.read_csv(path)
        assert read.column_names == list(EXPORT_COLUMNS)
        assert summary.rows == read.num_rows == table.num_rows
        assert sorted(read.column("event_id").to_pylist()) == sorted(
            table.column("event_id").to_pylist()
        )
        assert summary.by_kind == {"human": training.n_human, "label_model": len(weak)}


def test_the_export_as_of_an_instant_is_what_training_then_read(store_cfg, tmp_path):
    _add_weak_labels(store_cfg)
    before = LATER - timedelta(days=1)
    cfg = load_config(
        overrides={
            "store.root": store_cfg.store.root,
            "taxonomy.classes": list(store_cfg.taxonomy.classes),
            "gold.fraction": store_cfg.gold.fraction,
            "train.as_of": before.isoformat(),
        }
    )
    summary = export_labels(
        Store(cfg.store.root),
        cfg.data_spec(),
        cfg.labels,
        tmp_path / "then.csv",
        as_of=cfg.train.as_of,
    )
    assert summary.as_of == before
    kinds = pcsv.read_csv(tmp_path / "then.csv").column("source_kind").to_pylist()
    assert set(kinds) == {"human"} and len(kinds) == summary.rows > 0


def test_an_export_to_an_unknown_format_says_which_it_can_write(store_cfg, tmp_path):
    with pytest.raises(ExportError, match=r"labels\.xlsx.*\.parquet.*\.csv"):
        export_labels(
            Store(store_cfg.store.root),
            store_cfg.data_spec(),
            store_cfg.labels,
            tmp_path / "labels.xlsx",
            as_of=None,
        )
    assert not (tmp_path / "labels.xlsx").exists()
