"""The small-data walk-through (docs/small-data.md), reproducible: a 1,000-image folder
with 5 labels a class, and a stand-in for the person who answers the exported CSV.

    python -m bench.small_data make ./digits1000 --truth ./digits1000.truth.csv
    python -m bench.small_data make ./my_images --truth ./my_images.truth.csv --colour
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


NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _colour_jpeg(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """The digit in a random colour on a random background, 32-96 px a side, as JPEG:
    closer to a user's photos than grey PNGs of one size."""
    ink = (pixels / 16.0)[..., None]
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(fg.astype(int) - bg).sum() < 200:  # keep the digit visible
        fg = rng.integers(0, 256, 3)
    rgb = (ink * fg + (1 - ink) * bg).astype(np.uint8)
    side = int(rng.integers(32, 97))
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").resize((side, side), Image.Resampling.BILINEAR).save(
        buf, "JPEG", quality=90
    )
    return buf.getvalue()


def make(
    folder: Path, truth: Path, colour: bool = False, per_class: int = LABELED_PER_CLASS
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"{folder} exists and is not empty: choose another folder")
    kept = {c: 0 for c in range(10)}
    rows = []
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        cls = int(digits.target[i])
        name = NAMES[cls] if colour else str(cls)
        data = _colour_jpeg(digits.images[i], rng) if colour else _png(digits.images[i])
        labeled = kept[cls] < per_class
        kept[cls] += labeled
        suffix = "jpg" if colour else "png"
        path = folder / (name if labeled else "unlabeled") / f"{i:04d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((hashlib.sha256(data).hexdigest(), name))
    with open(truth, "w", newline="") as fh:
        csv.writer(fh).writerows([("example_id", "label"), *rows])
    print(
        f"wrote {N_IMAGES} images to {folder}: {per_class} a class in class folders, "
        f"{N_IMAGES - 10 * per_class} in unlabeled/; true classes in {truth}"
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
    m.add_argument(
        "--colour",
        action="store_true",
        help="colour JPEGs of 32-96 px in folders named zero..nine (default: grey 32 px PNGs "
        "in folders 0..9)",
    )
    m.add_argument("--labels-per-class", type=int, default=LABELED_PER_CLASS)
    a = sub.add_parser("answer", help="fill an exported CSV with the true classes")
    a.add_argument("tasks_csv", type=Path)
    a.add_argument("--truth", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--annotator", default="dana@example.com")
    args = p.parse_args(argv)
    if args.command == "make":
        make(args.folder, args.truth, args.colour, args.labels_per_class)
    else:
        answer(args.tasks_csv, args.truth, args.out, args.annotator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
