"""The config `semilabel init` writes loads as written, keeps odd class names exactly,
explains its choices, and never replaces a file."""

from pathlib import Path

import pytest

from configs.schema import load_config
from configs.starter import StarterChoices, write_starter

CHOICES = StarterChoices(
    kind="image_folder",
    path="/data/my photos: 2026",
    name="shop",
    classes=("café", 'say "cheese"', "yes", "no", "3", "null"),
    channels=3,
    channels_why="40 of 40 images are colour",
    image_size=48,
    image_size_why="the median shorter side is 50 px",
    network="small_cnn",
    network_why="a small CNN",
    colour="invariant",
    colour_why="colour does not tell the classes apart",
    gold_fraction=0.35,
    gold_budget=12,
    gold_why="the gate needs 4 a class " * 8,  # long: wrapped into comment lines
)


def test_the_starter_config_loads_as_chosen(tmp_path: Path):
    out = write_starter(CHOICES, tmp_path / "semilabel.yaml")
    cfg = load_config(out)
    # YAML would read yes/no/null/3 as other types: they stay the class names
    assert cfg.taxonomy.classes == CHOICES.classes
    assert (cfg.source.kind, cfg.source.path) == ("image_folder", "/data/my photos: 2026")
    assert (cfg.train.channels, cfg.train.image_size, cfg.train.network) == (3, 48, "small_cnn")
    assert (cfg.gold.fraction, cfg.sampling.budget.gold) == (0.35, 12)
    assert (cfg.train.augment.colour, cfg.train.augment.flip) == ("invariant", False)
    assert cfg.train_settings().augment.colour == "invariant"  # reaches training
    assert (cfg.ingest.convert, cfg.store.root) == ("auto", ".semilabel/shop/store")
    assert (cfg.mlflow.experiment, cfg.mlflow.model_name) == ("shop", "shop-classifier")
    text = out.read_text()
    assert "# the median shorter side is 50 px" in text
    assert "    # colour does not tell the classes apart\n    colour: invariant" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_init_never_overwrites(tmp_path: Path):
    out = tmp_path / "semilabel.yaml"
    out.write_text("mine")
    with pytest.raises(FileExistsError, match="never overwrites"):
        write_starter(CHOICES, out)
    assert out.read_text() == "mine"
    assert not list(tmp_path.glob(".*init"))  # no leftovers
