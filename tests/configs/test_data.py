"""configs/data.py: the data sections' own rules, and DataSpec, what every stage shares."""

import dataclasses

import pytest

from configs.base import ConfigError
from configs.schema import load_config


def test_path_required_for_folder_sources():
    with pytest.raises(ConfigError, match="source.path is required"):
        load_config(overrides={"source.kind": "image_folder"})


def test_class_names_are_unique_and_never_label():
    with pytest.raises(ConfigError, match=r"duplicates: \['cat'\]"):
        load_config(overrides={"taxonomy.classes": ["cat", "dog", "cat"]})
    with pytest.raises(ConfigError, match="'label' cannot be a class name"):
        load_config(overrides={"taxonomy.classes": ["label", "dog"]})


def test_metadata_columns_neither_repeat_nor_hide_a_builtin_slice():
    manifest = {"source.kind": "manifest", "source.path": "m.csv"}
    with pytest.raises(ConfigError, match=r"has duplicates: \['region'\]"):
        load_config(overrides={**manifest, "source.metadata_columns": ["region", "region"]})
    with pytest.raises(ConfigError, match=r"\['source'\] would hide the built-in slice"):
        load_config(overrides={**manifest, "source.metadata_columns": ["source"]})


def test_the_data_spec_carries_the_sections_and_the_model_input_shape():
    cfg = load_config(
        overrides={
            "store.root": "/data/store",
            "taxonomy.classes": ["cat", "dog"],
            "train.image_size": 48,
            "train.channels": 3,
            "ingest.convert": "RGB",
            "seed": 7,
        }
    )
    spec = cfg.data_spec()
    assert (spec.root, spec.classes) == ("/data/store", ("cat", "dog"))
    assert (spec.image_size, spec.channels, spec.seed) == (48, 3, 7)
    assert spec.gold is cfg.gold and spec.store is cfg.store
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]
