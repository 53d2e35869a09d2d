"""The gold holdout as evaluation tensors: the latest human label of every gold example in
one part (`test` for the gate and the monitor, `dev` for choosing), its image, and a
snapshot of exactly which examples and label events they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from configs.data import DataSpec
from tasks.images.decode import decode_images
from tasks.store import DEV, EXAMPLES, TEST, GoldSplit, Store, human_labels

UNKNOWN = "unknown"  # the slice group of an example without the value
COLUMNS = ["example_id", "image", "source", "ingested_at", "metadata"]
BATCH_ROWS = 4096


@dataclass(frozen=True)
class GoldSpec:
    """What loading a gold part needs to know, and nothing more."""

    split: GoldSplit
    classes: tuple[str, ...]
    image_size: int
    channels: int

    @classmethod
    def from_data(cls, data: DataSpec) -> GoldSpec:
        return cls(
            GoldSplit(data.gold.fraction, data.gold.salt, data.gold.test_share),
            tuple(data.classes),
            data.image_size,
            data.channels,
        )


@dataclass
class GoldSet:
    part: str  # "dev" or "test"
    ids: list[str]
    label_event_ids: list[str]
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) class indices
    snapshot_id: str
    sizes: dict[str, int]  # human-labeled gold examples per part: {"dev": n, "test": m}
    # slice key -> group of each example: "source", "ingest_date" (YYYY-MM-DD), and each
    # metadata key stored with the gold examples ("unknown" where an example has none)
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    unlabeled_gold: int = 0  # gold examples (either part) with no human label yet
    n_examples: int = 0  # example rows in the store (an example stored twice counts twice)

    def __len__(self) -> int:
        return len(self.ids)


Human = dict[str, tuple[str, str]]  # example id -> (class name, label event id)


def load_gold_set(store: Store, spec: GoldSpec, part: str = TEST) -> GoldSet:
    """The gold `part`'s latest human labels (taxonomy classes only) and images, each
    example once however many times an older version stored it, streamed from the store."""
    if part not in (DEV, TEST):
        raise ValueError(f"gold part must be {DEV!r} or {TEST!r}, not {part!r}")
    human = human_labels(store, spec.classes)
    labeled = list(human)
    parts = spec.split.parts(labeled)
    sizes = {DEV: int((parts == DEV).sum()), TEST: int((parts == TEST).sum())}
    wanted = {e for e, p in zip(labeled, parts, strict=True) if p == part}
    rows = _stream_gold_rows(store, spec, human, wanted)
    events = [human[e][1] for e in rows.ids]
    snapshot_id = (
        store.write_snapshot(rows.ids, events, purpose=f"gold-{part}", run_id=f"gold-{part}")
        if rows.ids
        else ""
    )
    index = {c: i for i, c in enumerate(spec.classes)}
    y = torch.tensor([index[human[e][0]] for e in rows.ids], dtype=torch.long)
    return GoldSet(
        part, rows.ids, events, rows.pixels(spec), y, snapshot_id, sizes, rows.slices(),
        rows.unlabeled, rows.n_rows,
    )  # fmt: skip


@dataclass
class _GoldRows:
    """The wanted gold examples' rows as the store streams by, and what the stream
    counted on the way: example rows, and gold examples without a human label."""

    ids: list[str] = field(default_factory=list)
    decoded: list[np.ndarray] = field(default_factory=list)  # each batch's images, decoded
    sources: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)  # YYYY-MM-DD of ingest
    metas: list[dict[str, str]] = field(default_factory=list)  # each example's metadata
    unlabeled: int = 0
    n_rows: int = 0

    def add(self, batch: pa.RecordBatch, rows: list[int], spec: GoldSpec) -> None:
        """Keep `rows` of `batch`: ids, decoded images, and the slice columns."""
        take = pa.array(rows, pa.int64())
        self.ids += [str(e) for e in batch.column(0).take(take).to_pylist()]
        blobs = batch.column(1).take(take).to_pylist()
        self.decoded.append(decode_images(blobs, spec.image_size, spec.channels))
        self.sources += [str(v) for v in batch.column(2).take(take).to_pylist()]
        self.dates += [
            f"{t:%Y-%m-%d}" if t else UNKNOWN for t in batch.column(3).take(take).to_pylist()
        ]
        self.metas += [dict(m or ()) for m in batch.column(4).take(take).to_pylist()]

    def pixels(self, spec: GoldSpec) -> torch.Tensor:
        """(N, C, H, W) uint8; (0, C, H, W) when no example was kept."""
        if not self.decoded:
            return torch.zeros(
                0, spec.channels, spec.image_size, spec.image_size, dtype=torch.uint8
            )
        return torch.from_numpy(np.concatenate(self.decoded))

    def slices(self) -> dict[str, np.ndarray]:
        """Slice key -> each example's group: source, ingest date, then every metadata key
        any kept example has (UNKNOWN where one lacks it)."""
        slices = {
            "source": np.array(self.sources, dtype=object),
            "ingest_date": np.array(self.dates, dtype=object),
        }
        for key in sorted({k for m in self.metas for k in m} - slices.keys()):
            slices[key] = np.array([m.get(key) or UNKNOWN for m in self.metas], dtype=object)
        return slices


def _stream_gold_rows(store: Store, spec: GoldSpec, human: Human, wanted: set[str]) -> _GoldRows:
    """One pass over the stored examples: the first row of each `wanted` example, decoded
    batch by batch so only the gold part's images are ever held."""
    out = _GoldRows()
    left = set(wanted)  # a duplicate row of an example already kept counts once
    seen: set[str] = set()
    for batch in store.iter_batches(EXAMPLES, COLUMNS, batch_size=BATCH_ROWS, lean=True):
        out.n_rows += batch.num_rows
        rows, unlabeled = _gold_rows_of(batch.column(0), spec.split, human, left, seen)
        out.unlabeled += unlabeled
        if rows:
            out.add(batch, rows, spec)
    return out


def _gold_rows_of(
    ids: pa.Array, split: GoldSplit, human: Human, left: set[str], seen: set[str]
) -> tuple[list[int], int]:
    """The rows of a batch to keep (the first of each example still `left`, which it
    takes out), and how many gold examples seen here for the first time (added to
    `seen`) have no human label."""
    rows: list[int] = []
    unlabeled = 0
    for i, (ex, is_gold) in enumerate(zip(ids.to_pylist(), split.is_gold(ids), strict=True)):
        if not is_gold:  # the wanted examples are all gold
            continue
        if ex not in seen:
            seen.add(ex)
            unlabeled += ex not in human
        if ex in left:
            left.discard(ex)
            rows.append(i)
    return rows, unlabeled
