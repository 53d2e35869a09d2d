"""The gold set: the right examples, their labels and pixels, each once, with a snapshot."""

import numpy as np

from tasks.gold import GoldSpec, load_gold_set
from tasks.image_decode import decode_images
from tasks.store import DEV, EXAMPLES, TEST, Store, human_labels


def test_the_gold_part_holds_its_human_labeled_examples_decoded_once_each(store_cfg):
    store = Store(store_cfg.store.root)
    spec = GoldSpec.from_config(store_cfg)
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
