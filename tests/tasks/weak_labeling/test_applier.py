"""The applier: example ids held as Arrow strings, and the functions applied over a real
store shard by shard (the same over a Prefect task runner: tests/flows/test_weak_label.py)."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs.schema import load_config
from tasks.store import EXAMPLES, SCHEMAS, Store, content_id
from tasks.weak_labeling import ABSTAIN, labeling_function
from tasks.weak_labeling.applier import (
    ExampleIds,
    LabelMatrix,
    ShardResult,
    apply_in_shards,
    plan_shards,
    read_matrix,
)
from tests.conftest import digit_png


def test_example_ids_read_as_a_sequence_of_str():
    arrow = pa.chunked_array([["a", "b"], ["c", "b", "d"]])
    ids = ExampleIds(arrow)
    assert len(ids) == 5
    assert (ids[0], ids[2], ids[-1]) == ("a", "c", "d")
    assert ids[1:4] == ["b", "c", "b"]
    assert list(ids) == ["a", "b", "c", "b", "d"]
    as_list = ["a", "b", "c", "b", "d"]
    assert ids == as_list and as_list == ids  # either side, as a list compares
    assert ids != ["a", "b", "c", "b"] and ids != ["a", "b", "c", "b", "x"]
    assert ids == ExampleIds(["a", "b", "c", "b", "d"])
    assert list(ids.chunks(2)) == [(0, ["a", "b"]), (2, ["c", "b"]), (4, ["d"])]
    assert list(ids.take(np.array([4, 0, 3]))) == ["d", "a", "b"]
    assert ids.repeated() == {"b"}
    assert ExampleIds([]).repeated() == set() and len(ExampleIds([])) == 0


def test_a_label_matrix_stores_a_list_of_ids_as_arrow():
    m = LabelMatrix(["x", "y"], ["f"], np.array([[0], [-1]], np.int16))
    assert isinstance(m.example_ids, ExampleIds)
    assert m.example_ids.arrow.to_pylist() == ["x", "y"]


def _store_in_files(root: str, files: int, rows: int) -> tuple[Store, dict[str, int]]:
    """A store whose examples are `files` files of `rows` digit PNGs each; (the store,
    example id -> the class its bar shows)."""
    store = Store(root)
    classes: dict[str, int] = {}
    for f in range(files):
        batch = []
        for i in range(f * rows, (f + 1) * rows):
            image = digit_png(i % 3, i)
            classes[content_id(image)] = i % 3
            batch.append(
                {
                    "example_id": content_id(image),
                    "image": image,
                    "height": 28,
                    "width": 28,
                    "channels": 1,
                    "source": "t",
                    "source_uri": f"mem://{i}",
                    "ingested_at": datetime.now(UTC),
                }
            )
        store.write(EXAMPLES, pa.Table.from_pylist(batch, schema=SCHEMAS[EXAMPLES]))
    return store, classes


@labeling_function(name="bar")
def bar(batch):
    from tests.tasks.weak_labeling.test_run import bar_position

    return bar_position(batch)


@labeling_function(name="odd_rows")
def odd_rows(batch):
    """Votes 0 on its batch's odd rows, abstains on the rest."""
    return np.where(np.arange(len(batch)) % 2 == 1, 0, ABSTAIN)


def test_shards_are_planned_from_row_groups_and_applied_in_store_order(store_root):
    store, classes = _store_in_files(store_root, files=4, rows=20)
    assert [s.rows for s in plan_shards(store, 30)] == [40, 40]  # whole files, never split
    assert [s.rows for s in plan_shards(store, 1)] == [20] * 4
    data = load_config(overrides={"store.root": store_root, "taxonomy.classes": ["a", "b", "c"]})
    wl = data.weak_labeling.model_copy(update={"shard_rows": 30, "batch_rows": 15, "workers": 1})

    seen: list[int] = []
    matrix = apply_in_shards(store, data.data_spec(), wl, [bar, odd_rows], "run/1", seen.append)
    in_order = [
        e
        for f in store.files(EXAMPLES)
        for e in pq.read_table(f, columns=["example_id"])[0].to_pylist()
    ]
    assert matrix.example_ids == in_order and matrix.names == ["bar", "odd_rows"]
    np.testing.assert_array_equal(matrix.votes[:, 0], [classes[e] for e in in_order])
    # batches of at most 15 rows, within a row group: 15 + 5 rows a file
    per_file = np.where(np.r_[np.arange(15), np.arange(5)] % 2 == 1, 0, ABSTAIN)
    np.testing.assert_array_equal(matrix.votes[:, 1], np.tile(per_file, 4))
    assert seen == [40, 80]  # rows applied, after each shard
    assert matrix.path.endswith("/label_matrices/run=run_1")
    parts = sorted(p.name for p in Path(matrix.path).iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet"]
    read_back = read_matrix(
        store,
        [
            ShardResult(1, 40, f"{matrix.path}/{parts[1]}", 0.0),
            ShardResult(0, 40, f"{matrix.path}/{parts[0]}", 0.0),
        ],
        ["bar", "odd_rows"],
    )
    assert read_back.example_ids == matrix.example_ids  # in shard order, however listed
    np.testing.assert_array_equal(read_back.votes, matrix.votes)

    # a rerun under the same run id replaces every part of the one before
    wider = wl.model_copy(update={"shard_rows": 1000})
    again = apply_in_shards(store, data.data_spec(), wider, [bar], "run/1")
    assert [p.name for p in Path(again.path).iterdir()] == ["part-00000.parquet"]
    np.testing.assert_array_equal(again.votes[:, 0], matrix.votes[:, 0])
