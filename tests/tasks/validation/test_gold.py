"""The gold set: the right examples, their labels and pixels, each once, with a snapshot;
and models' probabilities on it streamed batch by batch, equal to one prediction over
all its pixels."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from configs.schema import load_config
from models import ClassifierConfig, build_classifier, predict_proba
from tasks.images.decode import decode_images
from tasks.registry.promotion import gold_probabilities
from tasks.store import DEV, EXAMPLES, TEST, Store, content_id, human_labels
from tasks.validation import GatePolicy, GoldEvidence, decide, gold_metrics
from tasks.validation.gold import GoldSpec, load_gold_set, predict_gold, select_gold
from tests.conftest import digit_png, ingest_configured_source, write


def test_the_gold_part_holds_its_human_labeled_examples_decoded_once_each(store_cfg):
    store = Store(store_cfg.store.root)
    spec = GoldSpec.from_data(store_cfg.data_spec())
    human = human_labels(store, spec.classes)
    parts = spec.split.parts(list(human))
    expected = {e for e, p in zip(human, parts, strict=True) if p == TEST}
    store.write(EXAMPLES, store.read(EXAMPLES).slice(0, 40))  # an older version's duplicates
    gold = load_gold_set(store, spec, TEST)
    table = store.read(EXAMPLES, ["example_id", "image"])
    stored = table.column(0).to_pylist()
    in_store_order = list(dict.fromkeys(e for e in stored if e in expected))
    ids = gold.ids.to_pylist()
    assert len(gold) == len(expected) > 0 and ids == in_store_order  # each once, first row
    assert gold.sizes == {DEV: int((parts == DEV).sum()), TEST: len(expected)}
    by_id = dict(zip(stored, table.column(1).to_pylist(), strict=True))
    pixels = decode_images([by_id[e] for e in ids], spec.image_size, spec.channels)
    assert np.array_equal(gold.x.numpy(), pixels)
    assert gold.y.tolist() == [spec.classes.index(human[e][0]) for e in ids]
    assert gold.label_event_ids.to_pylist() == [human[e][1] for e in ids]
    assert store.count_snapshot(gold.snapshot_id) == 2 * len(gold)  # examples + events
    distinct = list(dict.fromkeys(stored))
    gold_ids = [e for e, g in zip(distinct, spec.split.is_gold(distinct), strict=True) if g]
    assert gold.unlabeled_gold == sum(e not in human for e in gold_ids) > 0
    assert gold.n_examples == len(stored) == table.num_rows


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(ClassifierConfig("small_cnn", 3, 1, 28, (0.13,), (0.31,))).eval()


def test_streamed_gold_predictions_equal_one_prediction_over_all_the_pixels(store_cfg):
    store = Store(store_cfg.store.root)
    spec = GoldSpec.from_data(store_cfg.data_spec())
    store.write(EXAMPLES, store.read(EXAMPLES).slice(0, 40))  # an older version's duplicates
    in_memory = load_gold_set(store, spec, TEST)
    candidate, champion = _model(0), _model(1)

    selection = select_gold(store, spec, TEST)
    streamed = predict_gold(store, spec, selection, [candidate, champion], batch_size=7)

    gold = streamed.gold
    assert gold.x is None and len(gold) == len(in_memory) > 14  # more than two batches
    assert gold.ids.equals(in_memory.ids)
    assert gold.label_event_ids.equals(in_memory.label_event_ids)
    assert torch.equal(gold.y, in_memory.y) and np.array_equal(selection.y, in_memory.y.numpy())
    assert gold.snapshot_id == selection.snapshot_id == in_memory.snapshot_id
    assert (gold.sizes, gold.unlabeled_gold, gold.n_examples) == (
        in_memory.sizes, in_memory.unlabeled_gold, in_memory.n_examples,
    )  # fmt: skip
    assert gold.slices.keys() == in_memory.slices.keys()
    for key, groups in gold.slices.items():
        assert groups.tolist() == in_memory.slices[key].tolist()
    for model, probs in zip([candidate, champion], streamed.probs, strict=True):
        expected = predict_proba(model, in_memory.x, batch_size=7).numpy()
        assert probs.dtype == np.float32 and np.array_equal(probs, expected)
    assert not np.array_equal(streamed.probs[0], streamed.probs[1])  # two models, not one

    # at the default batch size, what the gate and the monitor predicted in memory before
    cand, champ = predict_gold(store, spec, selection, [candidate, champion]).probs
    cand_in_memory = gold_probabilities(candidate, in_memory, spec)
    champ_in_memory = gold_probabilities(champion, in_memory, spec)
    assert np.array_equal(cand, cand_in_memory) and np.array_equal(champ, champ_in_memory)
    y = in_memory.y.numpy()
    assert gold_metrics(cand, selection.y, spec.classes) == gold_metrics(
        cand_in_memory, y, spec.classes
    )
    policy = replace(GatePolicy.from_config(store_cfg.gate), slices=("source", "ingest_date"))
    report = decide(GoldEvidence(spec.classes, selection.y, cand, champ, gold.slices), policy)
    expected = decide(
        GoldEvidence(spec.classes, y, cand_in_memory, champ_in_memory, in_memory.slices), policy
    )
    assert report.to_dict() == expected.to_dict()
    assert (
        report.gain is not None and report.bounds["accuracy"].low < report.bounds["accuracy"].high
    )  # the bounds were computed, paired with the champion


def test_an_empty_gold_part_streams_nothing(tmp_path: Path, store_cfg):
    empty = Store(str(tmp_path / "empty"))
    spec = GoldSpec.from_data(store_cfg.data_spec())
    selection = select_gold(empty, spec, TEST)
    predicted = predict_gold(empty, spec, selection, [_model(0)])
    assert len(selection) == 0 and selection.snapshot_id == ""
    assert predicted.probs[0].shape == (0, len(spec.classes)) and len(predicted.gold) == 0
    assert load_gold_set(empty, spec, DEV).x.shape == (0, 1, 28, 28)


def test_gold_slices_carry_each_metadata_key_with_unknown_where_it_is_missing(
    store_root: str, tmp_path: Path
):
    cfg = load_config(
        overrides={
            "store.root": store_root,
            "ingest.workers": 1,
            "taxonomy.classes": ["0", "1", "2"],
            "gold.fraction": 0.5,
            "source.kind": "manifest",
            "source.path": str(tmp_path / "m.csv"),
            "source.metadata_columns": ["region", "camera"],
            "gate.slices": ["source", "region"],
        }
    )
    spec = GoldSpec.from_data(cfg.data_spec())
    images = [digit_png(i % 3, i) for i in range(60)]
    ids = [content_id(data) for data in images]
    # a region by row, every fifth left empty; a camera on one gold test example only
    regions = {e: f"r{i % 2}" if i % 5 else "" for i, e in enumerate(ids)}
    on_camera = ids[list(spec.split.parts(ids)).index(TEST)]
    lines = ["path,label,region,camera"]
    for i, (e, data) in enumerate(zip(ids, images, strict=True)):
        write(tmp_path / f"img/{i}.png", data)
        lines.append(f"img/{i}.png,{i % 3},{regions[e]},{'cam-1' if e == on_camera else ''}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    ingest_configured_source(cfg)

    gold = load_gold_set(Store(store_root), spec, TEST)

    ids = gold.ids.to_pylist()
    assert len(gold) > 5 and on_camera in ids
    assert set(gold.slices) == {"source", "ingest_date", "region", "camera"}
    assert gold.slices["region"].tolist() == [regions[e] or "unknown" for e in ids]
    assert {"r0", "r1", "unknown"} <= set(gold.slices["region"])  # every group is present
    assert gold.slices["camera"].tolist() == ["cam-1" if e == on_camera else "unknown" for e in ids]
    stored = Store(store_root).read(EXAMPLES, ["example_id", "ingested_at"]).to_pylist()
    day = {r["example_id"]: f"{r['ingested_at']:%Y-%m-%d}" for r in stored}
    assert gold.slices["ingest_date"].tolist() == [day[e] for e in ids]
    assert gold.slices["source"].dtype == object
