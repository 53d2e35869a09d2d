"""configs/train.py: the training section's own rules, and its one mapping onto the
training loop's settings."""

from datetime import UTC, datetime

import pytest

from configs.base import ConfigError
from configs.schema import load_config


def test_as_of_without_a_zone_is_utc():
    cfg = load_config(overrides={"train.as_of": "2026-11-30 08:00:00"})
    assert cfg.train.as_of == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def test_pretrained_weights_need_a_torchvision_network():
    with pytest.raises(ConfigError, match="train.pretrained needs a torchvision network"):
        load_config(overrides={"train.pretrained": "imagenet", "train.network": "small_cnn"})
    cfg = load_config(overrides={"train.pretrained": "imagenet", "train.network": "resnet18"})
    assert cfg.train.pretrained == "imagenet"


@pytest.mark.parametrize(
    ("given", "read"), [(True, "prior"), (False, "off"), ("uniform", "uniform")]
)
def test_distribution_alignment_reads_older_booleans(given, read):
    cfg = load_config(overrides={"train.distribution_alignment": given})
    assert cfg.train.distribution_alignment == read


def test_the_loop_trains_with_exactly_the_configured_values():
    cfg = load_config(
        overrides={
            "train.student_steps": 123,
            "train.augment.colour": "invariant",
            "health.guard_margin": 0.07,
            "health.guard_warmup_steps": 50,
            "train.seeded_student_steps": 999,
            "taxonomy.classes": ["a", "b", "c"],
            "seed": 5,
        }
    )
    settings = cfg.train_settings()
    assert settings.student_steps == 123 and settings.augment.colour == "invariant"
    assert (settings.guard_margin, settings.guard_warmup_steps) == (0.07, 50)
    assert settings.seeded_student_steps == 999
    assert (settings.num_classes, settings.seed) == (3, 5)
    assert settings.teacher_steps == cfg.train.teacher_steps
