"""The training data: labels resolved from a real store, and the gold holdout kept out."""

import io
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image

from configs.schema import load_config
from flows.train import training_inputs
from tasks.store import (
    DEV,
    EXAMPLES,
    LABELS,
    QUARANTINE,
    TEST,
    GoldSplit,
    Store,
    content_id,
    gold_mask,
)
from tasks.training import (
    SAME_IMAGE_AS_GOLD,
    DataLeakError,
    NotEnoughDataError,
    load_training_data,
    train_and_log,
)
from tests.conftest import digit_png, ingest_folder, label_events, write


def _split(cfg) -> GoldSplit:
    return GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)


def test_gold_examples_never_reach_training_tensors(store_cfg):
    cfg = store_cfg
    ts = load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)
    gold_ids = set(ts.gold_ids.to_pylist())
    assert gold_ids and not gold_ids & set(ts.train_ids.to_pylist())
    assert not gold_mask(ts.train_ids, cfg.gold.fraction, cfg.gold.salt).any()
    # The tensors themselves: no training image equals a gold image, pixel for pixel.
    all_ids = [content_id(digit_png(i % 3, i)) for i in range(240)]
    parts = _split(cfg).parts(all_ids)
    gold_pixels = {
        np.asarray(Image.open(io.BytesIO(digit_png(i % 3, i)))).tobytes()
        for i in range(240)
        if parts[i]
    }
    for x in (ts.data.x_lb, ts.data.x_ulb):
        assert not gold_pixels & {r.numpy()[0].tobytes() for r in x}
    # Training curves see the dev part of gold only; the test part is the gate's alone.
    labeled_parts = list(parts[:150])
    assert len(ts.gold_ids) == labeled_parts.count(DEV) > 0
    assert labeled_parts.count(TEST) > 0
    assert not {all_ids[i] for i in range(150) if parts[i] == TEST} & gold_ids
    assert len(ts.data.x_lb) == 150 - labeled_parts.count(DEV) - labeled_parts.count(TEST)
    assert len(ts.data.x_ulb) == 240 - int((parts != "").sum())  # every non-gold example


def _reencoded(data: bytes) -> bytes:
    """The same pixels in another PNG encoding: another content hash, another id."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "PNG", compress_level=0)
    assert buf.getvalue() != data
    return buf.getvalue()


def _store_with_a_copy_of_a_gold_image(store_cfg, tmp_path: Path) -> tuple[str, str]:
    """Ingest, as a labeled example outside gold, a re-encoded copy of a gold image.
    Returns (gold id, copy id)."""
    cfg = store_cfg
    split = _split(cfg)
    for i in range(150):
        data = digit_png(i % 3, i)
        if split.is_gold([content_id(data)])[0]:
            break
    for salt in range(100):  # a copy whose own id falls outside gold
        copy = _reencoded(digit_png(i % 3, i)) + b"\x00" * salt  # trailing bytes: same pixels
        if not split.is_gold([content_id(copy)])[0]:
            break
    write(tmp_path / "copies" / str(i % 3) / "copy.png", copy)
    ingest_folder(cfg, tmp_path / "copies", "copies", "c")
    return content_id(data), content_id(copy)


def test_a_copy_of_a_gold_image_is_quarantined_and_left_out_of_training(store_cfg, tmp_path):
    gold_id, copy_id = _store_with_a_copy_of_a_gold_image(store_cfg, tmp_path)
    store = Store(store_cfg.store.root)
    ts = load_training_data(store, store_cfg.data_spec(), store_cfg.train, store_cfg.labels)
    assert ts.n_gold_duplicates == 1
    assert len(ts.train_ids) > 0 and len(ts.labeled_ids) > 0
    assert copy_id not in ts.train_ids.to_pylist() + ts.labeled_ids.to_pylist()
    (q,) = store.read(QUARANTINE).filter(pc.field("reason") == SAME_IMAGE_AS_GOLD).to_pylist()
    assert q["example_id"] == copy_id and gold_id in q["detail"]
    # again: no second quarantine row
    load_training_data(store, store_cfg.data_spec(), store_cfg.train, store_cfg.labels)
    assert store.read(QUARANTINE).filter(pc.field("reason") == SAME_IMAGE_AS_GOLD).num_rows == 1


def test_the_leak_guard_stops_the_run_when_a_gold_image_reaches_training(
    store_cfg, tmp_path, monkeypatch
):
    # The guard checks the finished training set on its own. Simulate a regression in the
    # selection (copies of gold images no longer recognised) and run training: it stops
    # before anything is trained or logged.
    _, copy_id = _store_with_a_copy_of_a_gold_image(store_cfg, tmp_path)
    monkeypatch.setattr("tasks.training.data.gold_duplicates", lambda *a: {})
    with pytest.raises(DataLeakError, match="pixels of a gold example.*" + copy_id):
        train_and_log(training_inputs(store_cfg))
    client = mlflow.MlflowClient(store_cfg.mlflow.tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_an_example_stored_twice_by_an_older_version_is_read_once(store_cfg):
    store = Store(store_cfg.store.root)
    before = load_training_data(store, store_cfg.data_spec(), store_cfg.train, store_cfg.labels)
    first = store.read(EXAMPLES).slice(0, 10)
    store.write(EXAMPLES, first)  # what a racing ingest of an older version could leave
    after = load_training_data(store, store_cfg.data_spec(), store_cfg.train, store_cfg.labels)
    assert after.train_ids.to_pylist() == before.train_ids.to_pylist()
    assert len(after.data.x_ulb) == len(before.data.x_ulb)


def test_weak_labels_count_by_confidence_and_low_confidence_stays_unlabeled(store_cfg):
    cfg = store_cfg
    store = Store(cfg.store.root)
    before = load_training_data(store, cfg.data_spec(), cfg.train, cfg.labels)
    unlabeled = [content_id(digit_png(i % 3, i)) for i in range(150, 240)]
    non_gold = [
        e
        for e, g in zip(
            unlabeled, gold_mask(unlabeled, cfg.gold.fraction, cfg.gold.salt), strict=True
        )
        if not g
    ]
    rows = [(f"lm{i}", e, str(i % 3), 0.9 if i % 2 == 0 else 0.5) for i, e in enumerate(non_gold)]
    store.write(
        LABELS,
        label_events(
            [
                {
                    "event_id": r[0],
                    "example_id": r[1],
                    "label": r[2],
                    "source_kind": "label_model",
                    "source_name": "dawid_skene",
                    "confidence": r[3],
                }
                for r in rows
            ]
        ),
    )
    after = load_training_data(store, cfg.data_spec(), cfg.train, cfg.labels)
    confident = sum(1 for r in rows if r[3] >= cfg.labels.confidence_floor)
    assert after.n_weak == confident
    assert len(after.data.x_lb) == len(before.data.x_lb) + confident
    weights = after.data.w_lb.tolist()
    assert weights.count(1.0) == after.n_human
    assert sorted(set(round(w, 4) for w in weights)) == [0.9, 1.0]
    # Which rows are human is known to the trainer (for train.human_share).
    human = after.data.human_lb
    assert int(human.sum()) == after.n_human and int((~human).sum()) == confident
    assert (after.data.w_lb[human] == 1.0).all()


def test_empty_store_says_what_to_do(tmp_path: Path):
    cfg = load_config(overrides={"store.root": str(tmp_path / "empty")})
    with pytest.raises(NotEnoughDataError, match="semilabel ingest"):
        load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)


def test_the_model_sees_pixels_only_never_provenance(tmp_path):
    """Two stores with the same images and labels but different provenance (source,
    file names, annotator, run ids, times) give identical training tensors and weights."""
    from models import fit
    from tests.conftest import digit_folder, tiny_run_overrides

    results = []
    for name in ("a", "b"):
        folder = digit_folder(tmp_path / name / "pictures-from-vendor-" / name, n=90, n_labeled=60)
        if name == "b":  # other file names for the same bytes
            for p in sorted(folder.rglob("*.png")):
                p.rename(p.with_name("renamed-" + p.name))
        cfg = load_config(
            overrides={
                **tiny_run_overrides(tmp_path / name, folder, "sqlite://"),
                "train.teacher_steps": 5,
                "train.student_steps": 5,
            }
        )
        ingest_folder(cfg, folder, f"source-{name}", f"run-{name}")
        ts = load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)
        results.append((ts, fit(ts.data, cfg.train_settings())))
    (ta, ra), (tb, rb) = results
    for field in ("x_lb", "y_lb", "w_lb", "x_ulb"):
        assert torch.equal(getattr(ta.data, field), getattr(tb.data, field)), field
    for k, v in ra.model.state_dict().items():
        assert torch.equal(v, rb.model.state_dict()[k]), k
