"""The gold holdout: which examples are gold, and which part of gold each belongs to.

Both are decided by a hash of the example id alone, so they never change between runs.
Gold splits again into `dev` (for choosing: labeling-function floors, label-model
alignment, training curves) and `test` (for judging: the gate and the monitor only), so
what was used to choose never flatters the verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

DEV, TEST = "dev", "test"
SLICE = 65536

Ids = Iterable[str] | pa.Array | pa.ChunkedArray


def each_id(example_ids: Ids) -> Iterable[str]:
    """The ids one by one; an Arrow array is turned into Python strings a slice at a
    time, so a million ids never sit in memory as objects."""
    if isinstance(example_ids, pa.Array | pa.ChunkedArray):
        for start in range(0, len(example_ids), SLICE):
            yield from example_ids.slice(start, SLICE).to_pylist()
    else:
        yield from example_ids


def _unit_hash(salt: str, example_ids: Ids) -> np.ndarray:
    """A number in [0, 1) per id, uniform and stable (BLAKE2b of salt + id)."""
    salt_b = salt.encode()
    scale = float(1 << 64)
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(salt_b + i.encode(), digest_size=8).digest()) / scale
            for i in each_id(example_ids)
        ),
        dtype=np.float64,
    )


def gold_mask(example_ids: Ids, fraction: float, salt: str) -> np.ndarray:
    """True where an example belongs to the gold holdout.

    Membership depends only on the id, the salt and the fraction, so it never changes
    between runs, and raising the fraction only adds examples to gold.
    """
    return _unit_hash(salt, example_ids) < fraction


@dataclass(frozen=True)
class GoldSplit:
    """Which examples are gold (`fraction` of all, by `salt`) and, among them, which are
    in the `test` part (`test_share` of gold, by a second hash)."""

    fraction: float
    salt: str
    test_share: float

    def is_gold(self, example_ids: Ids) -> np.ndarray:
        return gold_mask(example_ids, self.fraction, self.salt)

    def parts(self, example_ids: Ids) -> np.ndarray:
        """Per id: "" (not gold), "dev" or "test"."""
        ids = (
            example_ids
            if isinstance(example_ids, pa.Array | pa.ChunkedArray)
            else list(example_ids)
        )
        gold = self.is_gold(ids)
        test = _unit_hash(f"{self.salt}/test", ids) < self.test_share
        out = np.full(len(ids), "", dtype="<U4")
        out[gold & test] = TEST
        out[gold & ~test] = DEV
        return out
