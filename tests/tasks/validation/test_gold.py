"""The gold set: the right examples, their labels and pixels, each once, with a snapshot."""

from pathlib import Path

import numpy as np

from configs.schema import load_config
from tasks.images.decode import decode_images
from tasks.store import DEV, EXAMPLES, TEST, Store, content_id, human_labels
from tasks.validation.gold import GoldSpec, load_gold_set
from tests.conftest import digit_png, ingest_configured_source, write


def test_the_gold_part_holds_its_human_labeled_examples_decoded_once_each(store_cfg):
    store = Store(store_cfg.store.root)
    spec = GoldSpec.from_data(store_cfg.data_spec())
    human = human_labels(store, spec.classes)
    parts = spec.split.parts(list(human))
    expected = {e for e, p in zip(human, parts, strict=True) if p == TEST}
    store.write(EXAMPLES, store.read(EXAMPLES).slice(0, 40))  # an older version's duplicates
    gold = load_gold_set(store, spec, TEST)
    assert len(gold) == len(expected) > 0 and set(gold.ids) == expected
    assert gold.sizes == {DEV: int((parts == DEV).sum()), TEST: len(expected)}
    table = store.read(EXAMPLES, ["example_id", "image"])
    by_id = dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    pixels = decode_images([by_id[e] for e in gold.ids], spec.image_size, spec.channels)
    assert np.array_equal(gold.x.numpy(), pixels)
    assert gold.y.tolist() == [spec.classes.index(human[e][0]) for e in gold.ids]
    assert gold.label_event_ids == [human[e][1] for e in gold.ids]
    assert store.count_snapshot(gold.snapshot_id) == 2 * len(gold)  # examples + events


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

    assert len(gold) > 5 and on_camera in gold.ids
    assert set(gold.slices) == {"source", "ingest_date", "region", "camera"}
    assert gold.slices["region"].tolist() == [regions[e] or "unknown" for e in gold.ids]
    assert {"r0", "r1", "unknown"} <= set(gold.slices["region"])  # every group is present
    assert gold.slices["camera"].tolist() == [
        "cam-1" if e == on_camera else "unknown" for e in gold.ids
    ]
