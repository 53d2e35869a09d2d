"""The applier's pieces: example ids held as Arrow strings."""

import numpy as np
import pyarrow as pa

from tasks.weak_labeling.applier import ExampleIds, LabelMatrix


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
