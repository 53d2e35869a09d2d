import hashlib

import numpy as np

from tasks.store import DEV, TEST, GoldSplit, gold_mask


def _ids(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_gold_membership_stable_and_matches_fraction():
    ids = _ids(5000)
    first = gold_mask(ids, 0.2, "gold-v1")
    again = gold_mask(list(reversed(ids)), 0.2, "gold-v1")[::-1]
    assert np.array_equal(first, again)
    assert abs(first.mean() - 0.2) <= 0.02
    # Raising the fraction only adds members; a different salt draws a different set.
    assert np.all(gold_mask(ids, 0.3, "gold-v1")[first])
    assert (gold_mask(ids, 0.2, "other") != first).sum() > 500


def test_gold_splits_into_dev_and_test_by_hash_and_only_gold_is_split():
    ids = _ids(20_000)
    split = GoldSplit(0.2, "gold-v1", 0.5)
    parts = split.parts(ids)
    gold = gold_mask(ids, 0.2, "gold-v1")
    assert np.array_equal(parts != "", gold)
    n_test, n_dev = int((parts == TEST).sum()), int((parts == DEV).sum())
    assert abs(n_test / gold.sum() - 0.5) < 0.03 and n_test + n_dev == gold.sum()
    # Stable, and independent of the other ids in the call.
    assert np.array_equal(split.parts(ids[:100]), parts[:100])
    # A larger test share only moves dev examples into test.
    wider = GoldSplit(0.2, "gold-v1", 0.7).parts(ids)
    assert np.all(wider[parts == TEST] == TEST)


def test_arrow_ids_get_the_same_membership_and_parts_as_python_strings(monkeypatch):
    import pyarrow as pa

    from tasks.store import holdout

    ids = [f"id-{i}" for i in range(1000)] + ["é-unicode"]
    split = GoldSplit(0.3, "salt", 0.5)
    monkeypatch.setattr(holdout, "SLICE", 7)  # many slices, the last one partial
    for arrow in (pa.array(ids), pa.chunked_array([ids[:500], ids[500:]])):
        assert np.array_equal(split.is_gold(arrow), split.is_gold(ids))
        assert np.array_equal(split.parts(arrow), split.parts(ids))
        assert list(holdout.each_id(arrow)) == ids
    assert 200 < split.is_gold(ids).sum() < 400
