"""What the store already holds that an ingest dedupes against: example ids in a compact
`IdIndex`, this source's label events, quarantine ids, and which files of each dataset
were read, so that catching up reads only the files other writers added since."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import compress

import numpy as np
import pyarrow.dataset as ds

from tasks.store import EXAMPLES, LABELS, QUARANTINE, SourceLog, Store

ID_BATCH_ROWS = 65_536  # stored ids read per batch when catching up


def _digests(hex_ids: list[str]) -> np.ndarray:
    """The first 128 bits of each SHA-256 id: two different images share them with
    probability about n^2 / 2^129 (1e-21 for a billion images), as in the decoded cache."""
    return np.array([bytes.fromhex(h[:32]) for h in hex_ids], dtype="S16")


class IdIndex:
    """Set membership for SHA-256 hex ids, ~16 B an id however many are known (their first
    128 bits: see `_digests`).

    The ids sit in sorted numpy runs: each `add` appends a run, and the last two runs
    merge while the older is no larger than the newer and the merge stays within
    `max_run` ids, so there are O(n / max_run + log n) runs, adding costs O(max_run) an
    id at most, and a merge never copies more than `max_run` ids at once (one sorted
    array grown by `np.insert` copied all n ids, and held them twice, on every add)."""

    def __init__(self, hex_ids: Iterable[str] = (), *, max_run: int = 1 << 18):
        self.max_run = max_run
        self._runs: list[np.ndarray] = []
        ids = list(hex_ids)
        if ids:
            self._add_run(np.unique(_digests(ids)))

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    @property
    def n_runs(self) -> int:
        return len(self._runs)

    def contains(self, hex_ids: list[str]) -> np.ndarray:
        found = np.zeros(len(hex_ids), bool)
        if not hex_ids or not self._runs:
            return found
        q = _digests(hex_ids)
        for run in self._runs:
            pos = np.searchsorted(run, q)
            pos[pos == len(run)] = 0
            found |= run[pos] == q
        return found

    def add(self, hex_ids: list[str]) -> None:
        """Add ids that are not in the index yet (callers check with `contains`)."""
        if hex_ids:
            self._add_run(np.unique(_digests(hex_ids)))

    def _add_run(self, run: np.ndarray) -> None:
        runs = self._runs
        runs.append(run)
        while (
            len(runs) > 1
            and len(runs[-2]) <= len(runs[-1])
            and len(runs[-2]) + len(runs[-1]) <= self.max_run
        ):
            new = runs.pop()
            old = runs.pop()
            runs.append(np.insert(old, np.searchsorted(old, new), new))


class DedupeState:
    """What the store already holds that this ingest dedupes against: example ids, this
    source's label events, quarantine ids, and which files of each dataset were read, so
    that `catch_up` reads only the files other writers added since."""

    def __init__(self, store: Store, source_name: str):
        self.store = store
        self.seen: dict[str, set[str]] = {d: set() for d in (EXAMPLES, LABELS, QUARANTINE)}
        self.examples = IdIndex()
        self.source = SourceLog("human", source_name)
        self.quarantine: set[str] = set()
        self.said_in_run: dict[str, tuple[str, str]] = {}  # example -> (label, source uri)
        self.catch_up()

    def catch_up(self) -> None:
        new = {d: [f for f in self.store.files(d) if f not in self.seen[d]] for d in self.seen}
        for ids in _column_batches(self.store, new[EXAMPLES], "example_id"):
            self.examples.add(list(compress(ids, (~self.examples.contains(ids)).tolist())))
        self.source.add_files(self.store, new[LABELS])
        self.quarantine |= self.store.ids_in_files(QUARANTINE, "quarantine_id", new[QUARANTINE])
        for d, files in new.items():
            self.seen[d].update(files)

    def written(self, dataset: str, path: str | None) -> None:
        if path is not None:
            self.seen[dataset].add(path)


def _column_batches(store: Store, files: list[str], column: str) -> Iterator[list[str]]:
    """One string column of `files`, a batch at a time: a store of millions of examples
    is read into the index without ever holding its ids as one set of Python strings."""
    if files:
        data = ds.dataset(files, format="parquet", filesystem=store.fs)
        for batch in data.to_batches(columns=[column], batch_size=ID_BATCH_ROWS):
            yield batch.column(0).to_pylist()
