"""The README's small-data walk-through, reproducible: a 1,000-image folder with 5 labels
a class, and a stand-in for the person who answers the exported CSV.

    python -m bench.small_data make ./digits1000 --truth ./digits1000.truth.csv
    semilabel retrain --set source.kind=image_folder --set source.path=./digits1000
    semilabel sample ... (the command the retrain printed)
    python -m bench.small_data answer .semilabel/annotation/<batch>.csv \\
        --truth ./digits1000.truth.csv --out answered.csv
    semilabel annotate import --file answered.csv
    semilabel retrain --set source.kind=image_folder --set source.path=./digits1000

The images are scikit-learn's 1,797 handwritten digits (8x8, shipped with the package:
no download), scaled to 32x32 PNGs: a data set the product was not tuned on. `make`
writes the first 1,000 of them, 5 of each class into `<class>/` folders and the rest into
`unlabeled/`, and keeps their true classes apart, in `--truth` (content hash -> class),
for `answer` to play the annotator.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

LABELED_PER_CLASS = 5
N_IMAGES = 1000
SIZE = 32


def _png(pixels: np.ndarray) -> bytes:
    img = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    img.resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def make(folder: Path, truth: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"{folder} exists and is not empty: choose another folder")
    kept = {c: 0 for c in range(10)}
    rows = []
    for i in range(N_IMAGES):
        cls = int(digits.target[i])
        data = _png(digits.images[i])
        labeled = kept[cls] < LABELED_PER_CLASS
        kept[cls] += labeled
        path = folder / (str(cls) if labeled else "unlabeled") / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((hashlib.sha256(data).hexdigest(), str(cls)))
    with open(truth, "w", newline="") as fh:
        csv.writer(fh).writerows([("example_id", "label"), *rows])
    print(
        f"wrote {N_IMAGES} images to {folder}: {LABELED_PER_CLASS} a class in class folders, "
        f"{N_IMAGES - 10 * LABELED_PER_CLASS} in unlabeled/; true classes in {truth}"
    )


def answer(tasks_csv: Path, truth: Path, out: Path, annotator: str) -> None:
    classes = dict(csv.reader(truth.read_text().splitlines()[1:]))
    rows = list(csv.DictReader(tasks_csv.read_text().splitlines()))
    for r in rows:
        r["label"], r["annotator"] = classes[r["example_id"]], annotator
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"answered {len(rows)} tasks as {annotator!r} into {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write the 1,000-image folder")
    m.add_argument("folder", type=Path)
    m.add_argument("--truth", type=Path, required=True)
    a = sub.add_parser("answer", help="fill an exported CSV with the true classes")
    a.add_argument("tasks_csv", type=Path)
    a.add_argument("--truth", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--annotator", default="dana@example.com")
    args = p.parse_args(argv)
    if args.command == "make":
        make(args.folder, args.truth)
    else:
        answer(args.tasks_csv, args.truth, args.out, args.annotator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
