from pathlib import Path

import pytest

from configs.schema import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config, parse_set_args


def test_default_config_loads_with_documented_values():
    cfg = load_config()
    assert cfg.source.kind == "mnist5k"
    assert cfg.gold.fraction == 0.2
    assert cfg.taxonomy.classes == tuple(str(i) for i in range(10))
    assert cfg.store.root == ".semilabel/store"


def test_the_default_file_restates_the_schema_defaults_and_nothing_else():
    """The schema is the one source of defaults (training's included: `train_settings`
    maps them onto the loop); default.yaml shows them with comments, and may not drift."""
    assert load_config() == Config()


def test_overrides_win_over_file_and_parse_yaml_scalars():
    cfg = load_config(
        overrides=parse_set_args(
            ["gold.fraction=0.3", "ingest.workers=4", "taxonomy.classes=[a, b]", "seed=7"]
        )
    )
    assert cfg.gold.fraction == 0.3
    assert cfg.ingest.workers == 4
    assert cfg.taxonomy.classes == ("a", "b")
    assert cfg.seed == 7


def test_unknown_override_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"source.kindd": "x"})
    msg = str(err.value)
    assert "'source.kindd'" in msg
    assert "kind, path, labels_per_class" in msg


def test_unknown_section_names_allowed_sections():
    with pytest.raises(ConfigError, match=r"'stor'.*allowed here: seed, store, taxonomy"):
        load_config(overrides={"stor.root": "/x"})


def test_unknown_key_in_file_is_rejected(tmp_path: Path):
    text = DEFAULT_CONFIG_PATH.read_text().replace("  fraction: 0.2", "  fracton: 0.2")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"unknown config key 'gold.fracton'.*fraction, salt"):
        load_config(path)


def test_mistyped_value_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"source.kind": "folder"})
    msg = str(err.value)
    assert "source.kind" in msg
    assert "'mnist5k', 'image_folder' or 'manifest'" in msg
    assert "'folder'" in msg


def test_every_error_is_listed_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"gold.fraction": 1.5, "ingest.workers": "many"})
    assert "gold.fraction" in str(err.value) and "ingest.workers" in str(err.value)


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_set_args(["store.root"])


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_gpu_profile_loads():
    cfg = load_config(DEFAULT_CONFIG_PATH.with_name("gpu.yaml"))
    assert (
        cfg.train.device == "cuda" and cfg.train.student_steps > load_config().train.student_steps
    )
