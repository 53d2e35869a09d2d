"""`semilabel init`: look at a user's images before the first run and choose the settings
a first run needs (classes, channels, image size, network, gold), each with its reason.

The survey reads the source's records as ingest would (`sources`), counts labels per
class over all of them (a folder listing or the manifest's label column: cheap), and
opens a sample of the images (headers for mode and size; a smaller sample decoded to
tell grayscale stored as RGB from colour). Nothing is written to the store.
"""

from __future__ import annotations

import io
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np

from configs.starter import StarterChoices
from tasks.images.check import read_file
from tasks.ingest.sources import (
    DataContractError,
    RawRecord,
    image_folder_records,
    manifest_records,
)

SAMPLE = 2000  # images whose header is read (mode, size)
DECODED_SAMPLE = 200  # of those, colour images decoded to find grayscale stored as RGB
SIZES = (32, 48, 64, 96, 128, 160, 224)  # training sides init chooses from
# Without a GPU, a first run at a larger side takes too long: small_cnn's step time grows
# with the pixels (900 steps: about 4 min at 32 px on 2 cores, 9 at 48, 16 at 64).
CPU_MAX_SIZE = 32
COLOUR_PER_CLASS = 25  # labeled colour images per class decoded to ask whether colour matters
COLOUR_PERMUTATIONS = 500
# colour tells classes apart when the class explains at least this share of the variation
# in the labeled images' colour casts, beyond chance (permutation p-value under 0.01)
COLOUR_SHARE = 0.1
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class DataSurvey:
    """What init found: counts over every record, modes and sizes over a sample."""

    kind: str  # image_folder | manifest
    path: str  # resolved
    records: int
    per_class: dict[str, int]  # labeled records by class name
    unlabeled: int
    sampled: int  # images whose header was read
    unreadable: int  # of those, not an image or unreadable
    modes: dict[str, int]  # sampled images by Pillow mode
    gray_in_rgb: int  # decoded colour-mode images whose channels are all equal
    decoded: int  # colour-mode images decoded for that check
    short_sides: tuple[int, ...]  # min(height, width) of each readable sampled image
    long_sides: tuple[int, ...]
    # does colour tell the classes apart? From up to COLOUR_PER_CLASS labeled colour
    # images a class: the share of their colour casts' variation the class explains, and
    # its permutation p-value; None when too few labeled colour images to say
    colour_share: float | None = None
    colour_p: float | None = None
    colour_checked: int = 0  # labeled images decoded for it

    @property
    def colour(self) -> bool:
        """Colour when at least a tenth of the colour-mode images really are colour."""
        colour_modes = sum(n for m, n in self.modes.items() if m not in GRAY_MODES)
        if not colour_modes:
            return False
        really = colour_modes * (1 - self.gray_in_rgb / max(self.decoded, 1))
        return really >= 0.1 * max(self.sampled - self.unreadable, 1)

    def lines(self) -> list[str]:
        """What was found, for the terminal."""
        readable = self.sampled - self.unreadable
        out = [
            f"{self.records} images in {self.path} ({self.kind}): "
            f"{sum(self.per_class.values())} labeled in {len(self.per_class)} classes, "
            f"{self.unlabeled} unlabeled",
        ]
        out += [f"  {name}: {n} labeled" for name, n in self.per_class.items()]
        modes = ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items(), key=lambda kv: -kv[1]))
        scope = "all" if self.sampled == self.records else f"a sample of {self.sampled}"
        out.append(f"image modes ({scope}): {modes or 'none readable'}")
        if self.gray_in_rgb:
            out.append(
                f"  {self.gray_in_rgb} of {self.decoded} colour-mode images decoded are "
                "grayscale stored as colour"
            )
        if readable:
            out.append(
                f"sizes: shorter side {min(self.short_sides)}-{max(self.short_sides)} px "
                f"(median {median(self.short_sides):g}), longer side up to "
                f"{max(self.long_sides)} px"
            )
        if self.colour_share is not None:
            out.append(
                f"colour: the class explains {self.colour_share:.0%} of the colour variation "
                f"among {self.colour_checked} labeled images (p = {self.colour_p:.3f})"
            )
        if self.unreadable:
            out.append(
                f"{self.unreadable} sampled files are not readable images (ingest will "
                "quarantine them, naming each)"
            )
        return out


def survey(
    path: str | Path,
    *,
    path_column: str = "path",
    label_column: str = "label",
    sample: int = SAMPLE,
    seed: int = 0,
) -> DataSurvey:
    """Survey an image folder or a manifest (.csv / .parquet) at `path`."""
    p = Path(path).expanduser().resolve()
    kind, records = _open(p, path, path_column, label_column)
    counted = _count_and_sample(records, sample, seed)
    if counted.records == 0:
        raise DataContractError(f"{str(path)!r} holds no images")
    modes, shorts, longs, bad, gray, decoded = _inspect(counted.chosen)
    casts, classes = _colour_casts(counted.labeled)
    share, p_value = colour_explained(casts, classes, seed=seed)
    return DataSurvey(
        kind=kind,
        path=str(p),
        records=counted.records,
        per_class=dict(sorted(counted.per_class.items())),
        unlabeled=counted.unlabeled,
        sampled=len(counted.chosen),
        unreadable=bad,
        modes=dict(modes),
        gray_in_rgb=gray,
        decoded=decoded,
        short_sides=tuple(shorts),
        long_sides=tuple(longs),
        colour_share=share,
        colour_p=p_value,
        colour_checked=len(classes),
    )


def _open(
    p: Path, path: str | Path, path_column: str, label_column: str
) -> tuple[str, Iterator[RawRecord]]:
    """(kind, records) of the folder or manifest at `p` (`path` resolved)."""
    if p.is_dir():
        _, records = image_folder_records(p)
        return "image_folder", records
    if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
        _, records = manifest_records(p, path_column, label_column)
        return "manifest", records
    if p.exists():
        raise DataContractError(
            f"{str(path)!r} is neither a folder of images nor a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    raise DataContractError(f"{str(path)!r} does not exist")


@dataclass(frozen=True)
class _Counted:
    """Labels counted over every record, and the records sampled to be opened."""

    records: int
    unlabeled: int
    per_class: Counter[str]
    chosen: list[RawRecord]  # an even sample of all records
    labeled: dict[str, list[RawRecord]]  # an even sample of each class, for the colour check


def _count_and_sample(records: Iterator[RawRecord], sample: int, seed: int) -> _Counted:
    """Count every record's label, keeping reservoir samples as they go by."""
    per_class: Counter[str] = Counter()
    n = unlabeled = 0
    chosen: list[RawRecord] = []
    labeled: dict[str, list[RawRecord]] = {}  # a reservoir per class, for the colour check
    rng = random.Random(seed)
    for rec in records:  # a reservoir: an even sample whatever the order of the records
        n += 1
        if rec.label is None:
            unlabeled += 1
        else:
            per_class[rec.label] += 1
            kept = labeled.setdefault(rec.label, [])
            if len(kept) < COLOUR_PER_CLASS:
                kept.append(rec)
            elif (j := rng.randrange(per_class[rec.label])) < COLOUR_PER_CLASS:
                kept[j] = rec
        if len(chosen) < sample:
            chosen.append(rec)
        else:
            j = rng.randrange(n)
            if j < sample:
                chosen[j] = rec
    return _Counted(n, unlabeled, per_class, chosen, labeled)


def _bytes(rec: RawRecord) -> bytes | None:
    if rec.error is not None:
        return None
    if rec.path is None:
        return rec.data
    try:
        return read_file(rec.path)
    except OSError:
        return None


def _inspect(
    chosen: list[RawRecord],
) -> tuple[Counter[str], list[int], list[int], int, int, int]:
    """Modes, shorter and longer sides, unreadable count, and the grayscale-in-RGB check."""
    from PIL import Image, ImageOps

    modes: Counter[str] = Counter()
    shorts: list[int] = []
    longs: list[int] = []
    bad = gray = decoded = 0
    for rec in chosen:
        data = _bytes(rec)
        try:
            img = Image.open(io.BytesIO(data or b""))
            w, h = img.size
        except Exception:  # noqa: BLE001 - whatever Pillow refuses, ingest quarantines
            bad += 1
            continue
        modes[img.mode] += 1
        shorts.append(min(w, h))
        longs.append(max(w, h))
        if img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") and decoded < DECODED_SAMPLE:
            try:
                rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"), np.int16)
            except Exception:  # noqa: BLE001 - a truncated file: ingest says so
                continue
            decoded += 1
            spread = np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])
            gray += bool(np.percentile(spread, 99) <= 6)  # JPEG noise, not colour
    return modes, shorts, longs, bad, gray, decoded


def _colour_casts(labeled: dict[str, list[RawRecord]]) -> tuple[np.ndarray, np.ndarray]:
    """Each decodable labeled image's colour cast: its mean R, G and B minus its mean
    brightness (so a lighter or darker photo of the same colours casts the same), with
    its class's index. Grayscale images cast (0, 0, 0)."""
    from PIL import Image, ImageOps

    casts: list[np.ndarray] = []
    classes: list[int] = []
    for index, name in enumerate(sorted(labeled)):
        for rec in labeled[name]:
            try:
                img = ImageOps.exif_transpose(Image.open(io.BytesIO(_bytes(rec) or b"")))
                img.thumbnail((64, 64))  # the mean colour needs no more pixels
                rgb = np.asarray(img.convert("RGB"), np.float64) / 255.0
            except Exception:  # noqa: BLE001 - unreadable: ingest quarantines it
                continue
            mean = rgb.reshape(-1, 3).mean(axis=0)
            casts.append(mean - mean.mean())
            classes.append(index)
    return np.asarray(casts, np.float64).reshape(-1, 3), np.asarray(classes, np.int64)


def colour_explained(
    casts: np.ndarray, classes: np.ndarray, *, seed: int = 0
) -> tuple[float | None, float | None]:
    """(share, p): the share of the casts' variation (total sum of squares, all three
    channels) that lies between the classes' means, and how often shuffled labels
    explain as much (a permutation test, so few images per class do not read as an
    effect). (None, None) with fewer than 2 classes of 3 images each, or no colour."""
    counts = np.bincount(classes) if len(classes) else np.zeros(0, np.int64)
    if (counts >= 3).sum() < 2:
        return None, None
    centred = casts - casts.mean(axis=0)
    total = float((centred**2).sum())
    if total < 1e-9:  # every image has the same cast: grayscale, or one colour everywhere
        return 0.0, 1.0

    def between(labels: np.ndarray) -> float:
        sums = np.zeros((len(counts), 3))
        np.add.at(sums, labels, centred)
        present = counts > 0
        return float(((sums[present] ** 2).sum(axis=1) / counts[present]).sum())

    observed = between(classes)
    gen = np.random.default_rng(seed)
    as_large = sum(
        between(gen.permutation(classes)) >= observed for _ in range(COLOUR_PERMUTATIONS)
    )
    return observed / total, (1 + as_large) / (1 + COLOUR_PERMUTATIONS)


def choose(
    found: DataSurvey, *, gpu: bool, name: str | None = None, out: str = "FILE"
) -> StarterChoices:
    """The settings a first run needs, each with the reason it was chosen (`out`: the
    config file they go to, named in the commands the reasons give)."""
    if len(found.per_class) < 2:
        have = ", ".join(found.per_class) or "none"
        layout = (
            "put each class's labeled images in a subfolder named after the class "
            "(PATH/<class>/...), the rest in PATH/unlabeled/"
            if found.kind == "image_folder"
            else "fill the manifest's label column for a few images of each class"
        )
        raise DataContractError(
            f"{found.path}: found labels for {len(found.per_class)} class(es) ({have}); a "
            f"classifier needs at least 2: {layout}"
        )
    channels = 3 if found.colour else 1
    side = median(found.short_sides) if found.short_sides else 32
    fitting = [s for s in SIZES if s <= side] or [SIZES[0]]
    size = fitting[-1] if gpu else min(fitting[-1], CPU_MAX_SIZE)
    size_why = f"the median shorter side is {side:g} px"
    if not gpu and fitting[-1] > CPU_MAX_SIZE:
        size_why += (
            f"; capped at {CPU_MAX_SIZE} because this machine has no GPU ({fitting[-1]} on a GPU)"
        )
    network = "resnet18" if size > 64 else "small_cnn"
    net_why = (
        "a torchvision ResNet-18 for images larger than 64 px"
        if network == "resnet18"
        else "a small CNN: fast on a CPU at this size (wrn28_2 is stronger on a GPU)"
    )
    colour_mode, colour_why = _colour_mode(found, channels)
    gold = _gold(found, out)
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in (name or _name(found)))
    return StarterChoices(
        kind=found.kind,
        path=found.path,
        name=slug.strip("-_") or "images",
        classes=tuple(found.per_class),
        channels=channels,
        channels_why=_channels_why(found, channels),
        image_size=size,
        image_size_why=size_why,
        network=network,
        network_why=net_why,
        colour=colour_mode,
        colour_why=colour_why,
        gold_fraction=gold[0],
        gold_budget=gold[1],
        gold_why=gold[2],
    )


def _colour_mode(found: DataSurvey, channels: int) -> tuple[str, str]:
    """train.augment.colour, and why: invariant when the labeled images' colours do not
    tell their classes apart (shapes do), so the model is not led by colour at random."""
    if channels == 1:
        return "keep", "grayscale: there is no colour to keep or discard"
    if found.colour_share is None or found.colour_p is None:
        return "keep", (
            "too few labeled colour images (3 a class in 2 classes) to tell whether colour "
            "tells the classes apart, so colour is kept"
        )
    measured = (
        f"among {found.colour_checked} labeled images the class explains "
        f"{found.colour_share:.0%} of the colour variation (p = {found.colour_p:.3f})"
    )
    if found.colour_share >= COLOUR_SHARE and found.colour_p < 0.01:
        return "keep", f"{measured}: colour tells the classes apart, so the model may use it"
    return "invariant", (
        f"{measured}: colour does not tell the classes apart, so the model learns shapes "
        "in any colour (random hue and channel order, each image standardized by its own "
        "colours); set keep if a class does have its own colour"
    )


MIN_GOLD_PER_CLASS = 4  # gate.min_labels_per_class's default: below it, undecided
TEST_SHARE = 0.5  # gold.test_share's default


def _gold(found: DataSurvey, out: str) -> tuple[float, int, str]:
    """(gold.fraction, sampling.budget.gold, why). Gold is drawn by id hash from every
    image, labeled or not: the fraction must leave each class enough gold *test* images
    to label (about twice the gate's minimum), and the gold budget asks annotators for the
    gold labels the gate will need beyond those the labeled images already bring."""
    k = len(found.per_class)
    images_needed = 2 * MIN_GOLD_PER_CLASS * k / TEST_SHARE
    fraction = round(min(max(images_needed / found.records, 0.2), 0.5), 2)
    fewest = min(found.per_class.values())
    expected = math.floor(fewest * fraction * TEST_SHARE)
    why = (
        f"gold is drawn from every image ({found.records} here): {fraction:g} of them "
        f"puts about {math.floor(found.records * fraction * TEST_SHARE)} in gold test; the "
        f"smallest class has {fewest} labels, so about {expected} of its labels land there"
    )
    if expected >= MIN_GOLD_PER_CLASS:
        return fraction, 0, why + f" (the gate needs {MIN_GOLD_PER_CLASS} a class)"
    missing = (MIN_GOLD_PER_CLASS - expected) * k
    budget = min(math.ceil(missing / TEST_SHARE), math.floor(found.records * fraction))
    return (
        fraction,
        budget,
        why + f"; the gate needs {MIN_GOLD_PER_CLASS} a class to decide, so "
        f"`semilabel sample --config {out}` asks annotators for {budget} gold labels "
        "(until then the gate is undecided and says how many it needs)",
    )


def _name(found: DataSurvey) -> str:
    p = Path(found.path)
    return p.name if found.kind == "image_folder" else p.parent.name or p.stem


def _channels_why(found: DataSurvey, channels: int) -> str:
    colour = sum(n for m, n in found.modes.items() if m not in GRAY_MODES)
    readable = max(found.sampled - found.unreadable, 1)
    if channels == 1:
        if colour and found.gray_in_rgb:
            return (
                f"{colour} of {readable} images are stored as colour but "
                f"{found.gray_in_rgb} of {found.decoded} decoded are grayscale"
            )
        return f"{readable - colour} of {readable} images are grayscale"
    return f"{colour} of {readable} images are colour; grayscale ones are converted"


def iter_lines(found: DataSurvey, choices: StarterChoices, out: str) -> Iterator[str]:
    """What init prints: the survey, the choices, the next command."""
    yield from found.lines()
    yield ""
    yield f"wrote {out}:"
    for line in choices.summary():
        yield f"  {line}"
    yield ""
    yield f"next: semilabel retrain --config {out}"
