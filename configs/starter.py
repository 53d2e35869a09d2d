"""A first config for a user's own data: the YAML `semilabel init` writes, with each
choice and its reason as a comment. The choices come from a survey of the data
(`tasks.ingest.survey`); every other key keeps its default (`configs/default.yaml`)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from configs.schema import load_config


@dataclass(frozen=True)
class StarterChoices:
    """What init chose for this data, and why (the reasons become comments)."""

    kind: str  # image_folder | manifest
    path: str
    name: str  # names the store folder, the MLflow experiment and the registered model
    classes: tuple[str, ...]
    channels: int
    channels_why: str
    image_size: int
    image_size_why: str
    network: str
    network_why: str
    colour: str  # train.augment.colour: keep | invariant
    colour_why: str
    gold_fraction: float
    gold_budget: int  # gold labels `semilabel sample` asks for (0: enough already)
    gold_why: str

    def summary(self) -> list[str]:
        return [
            f"source: {self.kind} {self.path}",
            f"classes: {', '.join(self.classes)}",
            f"channels: {self.channels} ({self.channels_why})",
            f"image size: {self.image_size} px ({self.image_size_why})",
            f"network: {self.network} ({self.network_why})",
            f"colour: {self.colour} ({self.colour_why})",
            f"gold fraction: {self.gold_fraction:g} ({self.gold_why})",
            f"store: .semilabel/{self.name}/store; MLflow experiment {self.name}, "
            f"model {self.name}-classifier",
        ]


def _q(value: str) -> str:
    """A YAML scalar that reads back as this exact string (JSON strings are YAML)."""
    return json.dumps(value)


def starter_yaml(c: StarterChoices) -> str:
    """The config file's text. Keys not written keep their defaults."""
    classes = "\n".join(f"    - {_q(name)}" for name in c.classes)
    mode = "RGB" if c.channels == 3 else "L (grayscale)"
    return f"""\
# semilabel config written by `semilabel init` for {c.path}
# Run it:   semilabel retrain --config <this file>
# Every key not here keeps its default: configs/default.yaml in the semilabel package
# lists them all with their meaning. Change any choice below; the reason is given.

source:
  kind: {c.kind}
  path: {_q(c.path)}
{_source_note(c.kind)}
taxonomy:
  # the class names found ({"folder names" if c.kind == "image_folder" else "label column"}),
  # sorted: this order is the model's output order, so keep it once a model exists
  classes:
{classes}

store:
  # a store of its own, so these images never mix with another dataset's
  root: {_q(f".semilabel/{c.name}/store")}

mlflow:
  experiment: {_q(c.name)}
  model_name: {_q(f"{c.name}-classifier")}

ingest:
  # any image mode is accepted and converted when decoded (palette, RGBA composited on
  # white, CMYK, 16-bit, grayscale among colour); EXIF orientation is applied
  convert: auto

gold:
{_comment(c.gold_why, 2)}
  fraction: {c.gold_fraction:g}

sampling:
  budget:
    gold: {c.gold_budget}                 # gold labels `semilabel sample` asks for

train:
{_comment(f"{c.channels_why}: every image is read as {mode}", 2)}
  channels: {c.channels}
{_comment(f"{c.image_size_why}; every image is resized (stretched) to this square side", 2)}
  image_size: {c.image_size}
{_comment(c.network_why, 2)}
  network: {c.network}
  augment:
    # a mirrored image of the same class? true for most photos, false for text or digits
    flip: false
{_comment(c.colour_why, 4)}
    colour: {c.colour}
"""


def _comment(text: str, indent: int) -> str:
    """`text` as YAML comment lines of at most 88 columns."""
    pad = " " * indent + "# "
    return "\n".join(textwrap.wrap(text, 88, initial_indent=pad, subsequent_indent=pad))


def _source_note(kind: str) -> str:
    if kind == "image_folder":
        return (
            "  # labels are the subfolder names: PATH/<class>/*.jpg; PATH/unlabeled/ and\n"
            "  # top-level files are unlabeled\n"
        )
    return "  # paths are relative to the manifest's folder; an empty label is unlabeled\n"


def write_starter(c: StarterChoices, out: str | Path) -> Path:
    """Write the starter config to `out`, never over an existing file, after checking
    that it loads (a ConfigError names the key otherwise)."""
    target = Path(out)
    text = starter_yaml(c)
    if target.exists():
        raise FileExistsError(
            f"{target} already exists: semilabel init never overwrites a file; choose "
            "another --out or remove it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.init")
    tmp.write_text(text)
    try:
        load_config(tmp)  # a ConfigError here is ours: it names the key
        with open(target, "x") as f:  # "x": never over a file that appeared meanwhile
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)
    return target
