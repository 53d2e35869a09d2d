"""The model that scores the pool, on a real store and a real MLflow (SQLite) registry:
a teacher trained on the current labels while there is no champion, the champion (by
its version) once there is one, and none while there are no labels."""

import mlflow
import torch

from configs.schema import load_config
from flows.sample import sampling_inputs
from models import Classifier
from tasks.registry.aliases import RegistryRef, promote, register_candidate
from tasks.registry.model_format import log_classifier
from tasks.sampling.scoring import NO_SCORER, scoring_model
from tasks.store import Store
from tasks.tracking import ensure_experiment
from tasks.training import load_training_data
from tests.conftest import store_with_images


def test_a_cold_start_teacher_then_the_champion_score_the_pool(store_cfg):
    cfg = load_config(
        overrides={
            "store.root": store_cfg.store.root,
            "taxonomy.classes": list(store_cfg.taxonomy.classes),
            "gold.fraction": store_cfg.gold.fraction,
            "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
            "mlflow.model_name": "scorer",
            "train.device": "cpu",
            "train.batch_size": 8,
            "sampling.cold_start_steps": 30,
        }
    )
    inputs = sampling_inputs(cfg)
    store = Store(cfg.store.root)

    teacher = scoring_model(store, inputs)  # no champion yet: a teacher on the labels
    labels = load_training_data(store, inputs.data, inputs.train, inputs.labels)
    assert teacher.version == f"teacher@{labels.data.fingerprint()}"
    assert isinstance(teacher.model, Classifier)

    # the teacher becomes the champion: from now on the champion scores, by its version
    uri = cfg.mlflow.tracking_uri
    mlflow.set_tracking_uri(uri)
    ensure_experiment(uri, "scoring-test")
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with mlflow.start_run():
        model_uri = log_classifier(teacher.model, cfg.taxonomy.classes, x)
    ref = RegistryRef(uri, "scorer")
    promote(ref, register_candidate(ref, model_uri, "run", {}), expected_champion=None)
    champion = scoring_model(store, inputs)
    assert champion.version == "scorer@v1"
    with torch.no_grad():
        pixels = x.float() / 255.0
        expected = teacher.model.eval()(pixels)
        assert torch.allclose(champion.model.eval()(pixels), expected, atol=1e-5)


def test_without_labels_or_a_champion_nothing_scores(tmp_path):
    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "taxonomy.classes": ["0", "1", "2"],
            "mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "train.device": "cpu",
        }
    )
    store, _ = store_with_images(cfg.store.root, n=6)  # images, not one label
    assert scoring_model(store, sampling_inputs(cfg)) == NO_SCORER
    assert NO_SCORER.model is None and NO_SCORER.version == "none"
