"""The training stage against a real store and a real MLflow (SQLite) store."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from configs.schema import load_config
from tasks.ingest import image_folder_records, ingest_records
from tasks.store import LABELS, SCHEMAS, Store, content_id, gold_mask
from tasks.training import (
    DataLeakError,
    NotEnoughDataError,
    assert_no_gold_in_training,
    load_training_data,
    train_and_log,
)
from tests.conftest import write


def _digit_png(cls: int, seed: int) -> bytes:
    """A 28x28 image whose class is where a bright bar sits, plus unique noise."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (28, 28), dtype=np.uint8)
    img[4:24, 2 + 9 * cls : 7 + 9 * cls] = 240
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def store_cfg(tmp_path: Path):
    folder = tmp_path / "images"
    for i in range(240):
        cls = i % 3
        sub = str(cls) if i < 150 else "unlabeled"  # 150 labeled (some gold), 90 unlabeled
        write(folder / sub / f"{i}.png", _digit_png(cls, i))
    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "source.kind": "image_folder",
            "source.path": str(folder),
            "taxonomy.classes": ["0", "1", "2"],
            "ingest.workers": 1,
            "gold.fraction": 0.3,
            "train.teacher_steps": 30,
            "train.student_steps": 30,
            "train.batch_size": 8,
            "train.uratio": 2,
            "train.eval_every": 20,
            "train.checkpoint_every": 0,
            "train.device": "cpu",
            "train.run_dir": str(tmp_path / "runs"),
            "mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    total, records = image_folder_records(folder)
    ingest_records(
        Store(cfg.store.root), records, cfg, source_name="folder", run_id="r", total=total
    )
    return cfg


def test_gold_examples_never_reach_training_tensors(store_cfg):
    cfg = store_cfg
    ts = load_training_data(Store(cfg.store.root), cfg)
    gold_ids = set(ts.gold_ids)
    assert gold_ids and not gold_ids & set(ts.train_ids)
    assert not gold_mask(ts.train_ids, cfg.gold.fraction, cfg.gold.salt).any()
    # The tensors themselves: no training image equals a gold image, pixel for pixel.
    gold_rows = {bytes(r.numpy().tobytes()) for r in ts.data.x_eval}
    for x in (ts.data.x_lb, ts.data.x_ulb):
        assert not gold_rows & {bytes(r.numpy().tobytes()) for r in x}
    n_gold = int(
        gold_mask(
            [content_id(_digit_png(i % 3, i)) for i in range(150)], cfg.gold.fraction, cfg.gold.salt
        ).sum()
    )
    assert len(ts.gold_ids) == n_gold
    assert len(ts.data.x_lb) == 150 - n_gold
    all_gold = int(
        gold_mask(
            [content_id(_digit_png(i % 3, i)) for i in range(240)], cfg.gold.fraction, cfg.gold.salt
        ).sum()
    )
    assert len(ts.data.x_ulb) == 240 - all_gold  # every non-gold example is an input


def test_a_leaked_gold_id_stops_training(store_cfg):
    ts = load_training_data(Store(store_cfg.store.root), store_cfg)
    ts.train_ids.append(ts.gold_ids[0])
    with pytest.raises(DataLeakError, match="gold example"):
        assert_no_gold_in_training(ts, store_cfg)


def test_weak_labels_count_by_confidence_and_low_confidence_stays_unlabeled(store_cfg):
    cfg = store_cfg
    store = Store(cfg.store.root)
    before = load_training_data(store, cfg)
    unlabeled = [content_id(_digit_png(i % 3, i)) for i in range(150, 240)]
    non_gold = [
        e
        for e, g in zip(
            unlabeled, gold_mask(unlabeled, cfg.gold.fraction, cfg.gold.salt), strict=True
        )
        if not g
    ]
    now = datetime.now(UTC)
    rows = [(f"lm{i}", e, str(i % 3), 0.9 if i % 2 == 0 else 0.5) for i, e in enumerate(non_gold)]
    store.write(
        LABELS,
        pa.table(
            {
                "event_id": [r[0] for r in rows],
                "example_id": [r[1] for r in rows],
                "label": [r[2] for r in rows],
                "source_kind": ["label_model"] * len(rows),
                "source_name": ["dawid_skene"] * len(rows),
                "confidence": pa.array([r[3] for r in rows], pa.float32()),
                "created_at": [now] * len(rows),
                "run_id": ["wl"] * len(rows),
                "taxonomy_version": ["v1"] * len(rows),
            },
            schema=SCHEMAS[LABELS],
        ),
    )
    after = load_training_data(store, cfg)
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
        load_training_data(Store(cfg.store.root), cfg)


@pytest.mark.slow
def test_train_and_log_records_a_complete_mlflow_run(store_cfg):
    import mlflow

    summary, result = train_and_log(store_cfg)
    assert summary.steps == 60 and summary.device == "cpu"
    assert summary.student_gold_accuracy >= 0.9
    client = mlflow.MlflowClient(store_cfg.mlflow.tracking_uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.params["train.teacher_steps"] == "30"
    assert run.data.params["data.n_gold"] == str(summary.n_gold)
    assert run.data.tags["semilabel.snapshot_id"] == summary.snapshot_id
    assert run.data.tags["semilabel.device"] == "cpu"
    for key in (
        "loss_sup",
        "loss_unsup",
        "mask_rate",
        "pseudo_labels_class_0",
        "eval_teacher_accuracy",
        "eval_student_accuracy",
        "eval_pseudo_label_precision",
    ):
        assert client.get_metric_history(summary.mlflow_run_id, key), key
    assert len(client.get_metric_history(summary.mlflow_run_id, "loss")) == 6  # every 10 steps
    # The logged model loads back as our class and predicts like the trained one.
    loaded = mlflow.pytorch.load_model(summary.model_uri)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), result.model(x), atol=1e-5)
    assert Store(store_cfg.store.root).count_snapshot(summary.snapshot_id) > 0


def test_batch_decoder_gives_exactly_the_pixels_of_the_pillow_decoder():
    import io

    from PIL import Image

    from tasks.training import decode_image, decode_images
    from tests.conftest import jpeg, png

    def encode(arr: np.ndarray, mode: str, **kw) -> bytes:
        buf = io.BytesIO()
        img = Image.fromarray(arr, mode="RGB" if arr.ndim == 3 else "L").convert(mode)
        img.save(buf, "PNG", **kw)
        return buf.getvalue()

    rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    blobs = [
        png(1),  # 8-bit grey 28x28: the native fast path
        png(2, size=32),  # needs a resize
        encode(rgb, "RGB"),  # grey: converted by Pillow; RGB: the fast path
        encode(rgb, "RGBA"),
        encode(rgb, "P"),
        png(3, mode="RGB"),
        jpeg(4, size=28),
    ]
    for channels in (1, 3):
        got = decode_images(blobs, 28, channels)
        assert got.shape == (len(blobs), channels, 28, 28) and got.dtype == np.uint8
        for i, b in enumerate(blobs):
            np.testing.assert_array_equal(got[i], decode_image(b, 28, channels), err_msg=str(i))
