"""The gold holdout as evaluation tensors: the latest human label of every gold example in
one part (`test` for the gate and the monitor, `dev` for choosing), its image, and a
snapshot of exactly which examples and label events they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from configs.schema import Config
from tasks.images.decode import decode_images
from tasks.store import DEV, EXAMPLES, TEST, GoldSplit, Store, human_labels

UNKNOWN = "unknown"  # the slice group of an example without the value


@dataclass(frozen=True)
class GoldSpec:
    """What loading a gold part needs to know, and nothing more."""

    split: GoldSplit
    classes: tuple[str, ...]
    image_size: int
    channels: int

    @classmethod
    def from_config(cls, cfg: Config) -> GoldSpec:
        return cls(
            GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share),
            tuple(cfg.taxonomy.classes),
            cfg.train.image_size,
            cfg.train.channels,
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


def load_gold_set(store: Store, spec: GoldSpec, part: str = TEST) -> GoldSet:
    """The gold `part`'s latest human labels (taxonomy classes only) and images, each
    example once however many times an older version stored it, streamed from the store."""
    if part not in (DEV, TEST):
        raise ValueError(f"gold part must be {DEV!r} or {TEST!r}, not {part!r}")
    index = {c: i for i, c in enumerate(spec.classes)}
    human = human_labels(store, spec.classes)
    labeled = list(human)
    parts = spec.split.parts(labeled)
    sizes = {DEV: int((parts == DEV).sum()), TEST: int((parts == TEST).sum())}
    wanted = {e for e, p in zip(labeled, parts, strict=True) if p == part}
    ids: list[str] = []
    sources: list[str] = []
    dates: list[str] = []
    metas: list[dict[str, str]] = []  # each gold example's stored metadata
    decoded: list[np.ndarray] = []  # each batch's gold images, decoded as they stream by
    seen: set[str] = set()
    unlabeled = n_rows = 0
    columns = ["example_id", "image", "source", "ingested_at", "metadata"]
    for batch in store.iter_batches(EXAMPLES, columns, batch_size=4096, lean=True):
        batch_ids = batch.column(0)
        n_rows += len(batch_ids)
        gold = spec.split.is_gold(batch_ids)
        rows = []
        for i, (ex, is_gold) in enumerate(zip(batch_ids.to_pylist(), gold, strict=True)):
            if not is_gold:  # the wanted examples are all gold
                continue
            if ex not in seen:
                seen.add(ex)
                unlabeled += ex not in human
            if ex in wanted:
                wanted.discard(ex)  # a duplicate row of the same example counts once
                ids.append(ex)
                rows.append(i)
        if rows:
            take = pa.array(rows, pa.int64())
            blobs = batch.column(1).take(take).to_pylist()
            decoded.append(decode_images(blobs, spec.image_size, spec.channels))
            sources += [str(v) for v in batch.column(2).take(take).to_pylist()]
            dates += [
                f"{t:%Y-%m-%d}" if t else UNKNOWN for t in batch.column(3).take(take).to_pylist()
            ]
            metas += [dict(m or ()) for m in batch.column(4).take(take).to_pylist()]
    events = [human[e][1] for e in ids]
    snapshot_id = (
        store.write_snapshot(ids, events, purpose=f"gold-{part}", run_id=f"gold-{part}")
        if ids
        else ""
    )
    x = (
        torch.from_numpy(np.concatenate(decoded))
        if decoded
        else torch.zeros(0, spec.channels, spec.image_size, spec.image_size, dtype=torch.uint8)
    )
    y = torch.tensor([index[human[e][0]] for e in ids], dtype=torch.long)
    slices = {
        "source": np.array(sources, dtype=object),
        "ingest_date": np.array(dates, dtype=object),
    }
    for key in sorted({k for m in metas for k in m} - slices.keys()):
        slices[key] = np.array([m.get(key) or UNKNOWN for m in metas], dtype=object)
    return GoldSet(part, ids, events, x, y, snapshot_id, sizes, slices, unlabeled, n_rows)
