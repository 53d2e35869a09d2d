"""What an ingest dedupes against: the compact id index, and catching up with the
store."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tasks.ingest import image_folder_records
from tasks.ingest.known import DedupeState, IdIndex
from tasks.store import EXAMPLES, LABELS, QUARANTINE, Store, content_id
from tests.conftest import png, write
from tests.tasks.ingest.conftest import ingest


def test_id_index_answers_membership_like_a_set_while_bounding_its_runs():
    rng = np.random.default_rng(0)
    index = IdIndex(max_run=256)
    added: set[str] = set()
    adds = 0
    while len(added) < 3000:
        batch = {rng.bytes(32).hex() for _ in range(int(rng.integers(1, 20)))} - added
        index.add(sorted(batch, reverse=True))  # any order
        added |= batch
        adds += 1
        assert index.n_runs <= len(added) / 64 + 10  # merged: far fewer runs than adds
    absent = [rng.bytes(32).hex() for _ in range(500)]
    probe = sorted(added)[::7] + absent + [max(added), min(added), "f" * 64, "0" * 64]
    assert index.contains(probe).tolist() == [h in added for h in probe]
    assert len(index) == len(added)
    assert index.n_runs < adds / 8, (index.n_runs, adds)
    assert IdIndex(list(added)[:5] * 2).contains(list(added)[:6]).tolist() == [True] * 5 + [False]
    assert IdIndex().contains(absent[:3]).tolist() == [False] * 3


def test_dedupe_state_reads_the_store_then_catches_up_with_only_what_others_added(
    store_root: str, tmp_path: Path
):
    write(tmp_path / "a/0/one.png", png(1))
    write(tmp_path / "a/unlabeled/two.png", png(2))
    write(tmp_path / "a/1/bad.png", b"not an image")
    ingest(store_root, image_folder_records(tmp_path / "a"))
    store = Store(store_root)
    known = DedupeState(store, "test")  # the source the helper ingests as

    assert known.examples.contains(
        [content_id(png(1)), content_id(png(2)), content_id(png(3))]
    ).tolist() == [True, True, False]
    assert len(known.examples) == 2
    assert known.source.event_ids == set(store.read(LABELS).column("event_id").to_pylist())
    assert known.quarantine == set(store.read(QUARANTINE).column("quarantine_id").to_pylist())
    assert len(known.quarantine) == 1

    # another writer adds an example: caught up
    write(tmp_path / "b/unlabeled/three.png", png(3))
    ingest(store_root, image_folder_records(tmp_path / "b"))
    known.catch_up()
    assert known.examples.contains([content_id(png(3))]).tolist() == [True]
    assert len(known.examples) == 3

    # a file this ingest wrote itself is not read back (it adds its own ids)
    before = set(store.files(EXAMPLES))
    write(tmp_path / "c/2/four.png", png(4))
    ingest(store_root, image_folder_records(tmp_path / "c"))
    (mine,) = set(store.files(EXAMPLES)) - before
    known.written(EXAMPLES, mine)
    known.written(LABELS, None)  # nothing written: nothing to remember
    known.catch_up()
    assert pq.read_table(mine, columns=["example_id"]).column(0).to_pylist() == [content_id(png(4))]
    assert known.examples.contains([content_id(png(4))]).tolist() == [False]
    # ... while its label event, in a file not marked as written, is caught up
    assert known.source.event_ids == set(store.read(LABELS).column("event_id").to_pylist())
    assert len(known.source.event_ids) == 2
