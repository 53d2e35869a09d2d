"""The gold holdout as evaluation tensors: the latest human label of every gold example in
one part (`test` for the gate and the monitor, `dev` for choosing), its image, and a
snapshot of exactly which examples and label events they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from configs.schema import Config
from tasks.image_decode import decode_images
from tasks.store import DEV, EXAMPLES, TEST, GoldSplit, Store, human_labels


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
    decoded: list[np.ndarray] = []  # each batch's gold images, decoded as they stream by
    for batch in store.iter_batches(EXAMPLES, ["example_id", "image"], batch_size=4096, lean=True):
        rows = []
        for i, ex in enumerate(batch.column(0).to_pylist()):
            if ex in wanted:
                wanted.discard(ex)  # a duplicate row of the same example counts once
                ids.append(ex)
                rows.append(i)
        if rows:
            blobs = batch.column(1).take(pa.array(rows, pa.int64())).to_pylist()
            decoded.append(decode_images(blobs, spec.image_size, spec.channels))
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
    return GoldSet(part, ids, events, x, y, snapshot_id, sizes)
