"""What the loop takes and gives (`models/train/settings.py`): settings whose values come
from the config alone, and the data's fingerprints that decide what a checkpoint or a
cached pre-phase may be reused for."""

import dataclasses

import pytest

from models import AugmentSettings, TrainSettings
from tests.models.conftest import PRODUCT, toy_data


def test_the_settings_the_config_sets_have_no_second_default():
    # one source of defaults (configs/): a TrainSettings made without them does not build
    with pytest.raises(TypeError, match="missing"):
        TrainSettings(num_classes=3)
    with pytest.raises(TypeError, match="missing"):
        AugmentSettings()
    defaulted = {
        f.name
        for cls in (TrainSettings, AugmentSettings)
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    assert defaulted == {
        "momentum",
        "max_rotate_deg",
        "max_shear",
        "max_translate",
    }  # what configs/train.py does not set
    assert PRODUCT.total_steps == PRODUCT.teacher_steps + PRODUCT.student_steps == 900


def test_the_fingerprint_follows_the_training_tensors_not_the_evaluation_set():
    data = toy_data()
    assert data.fingerprint() == toy_data().fingerprint()
    relabeled = dataclasses.replace(data, y_lb=(data.y_lb + 1) % 3)
    reweighted = dataclasses.replace(data, w_lb=data.w_lb * 0.5)
    other_pool = dataclasses.replace(data, x_ulb=toy_data(seed=1).x_ulb)
    fingerprints = {d.fingerprint() for d in (data, relabeled, reweighted, other_pool)}
    assert len(fingerprints) == 4
    other_eval = dataclasses.replace(data, x_eval=data.x_eval[:10], y_eval=data.y_eval[:10])
    assert other_eval.fingerprint() == data.fingerprint()  # evaluation only: never trained on


def test_the_pool_fingerprint_follows_the_unlabeled_pool_alone():
    data = toy_data()
    relabeled = dataclasses.replace(data, y_lb=(data.y_lb + 1) % 3, x_lb=data.x_lb[:5])
    assert relabeled.pool_fingerprint() == data.pool_fingerprint()
    changed = data.x_ulb.clone()
    changed[0] = 255 - changed[0]  # the first image: the sampled stride includes it
    assert dataclasses.replace(data, x_ulb=changed).pool_fingerprint() != data.pool_fingerprint()
    shorter = dataclasses.replace(data, x_ulb=data.x_ulb[:-1])
    assert shorter.pool_fingerprint() != data.pool_fingerprint()
