"""The model that scores the pool: the champion (pinned), or on a cold start a
supervised teacher trained on the current labels; without any label, none (only the
`random` strategy can choose then)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from models import Classifier, fit
from tasks.registry.aliases import RegistryRef, champion_version
from tasks.registry.model_format import load_classifier
from tasks.sampling.inputs import SamplingInputs
from tasks.store import Store
from tasks.training import NotEnoughDataError, load_training_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scorer:
    model: Classifier | None
    version: str  # "<model>@v3", "teacher@<data>", or "none"


NO_SCORER = Scorer(None, "none")


def scoring_model(store: Store, inputs: SamplingInputs) -> Scorer:
    """The champion (pinned), or on a cold start a supervised teacher trained on the
    current labels; without any label, nothing (only `random` can choose then)."""
    ref = RegistryRef(inputs.mlflow.tracking_uri, inputs.mlflow.model_name)
    version = champion_version(ref)
    if version is not None:
        model = load_classifier(
            ref.version_uri(version),
            ref.tracking_uri,
            trust_pickle=inputs.mlflow.trust_pickled_models,
        )
        return Scorer(model, f"{ref.model_name}@v{version}")
    return cold_start_teacher(store, inputs)


def cold_start_teacher(store: Store, inputs: SamplingInputs) -> Scorer:
    """A teacher trained for `sampling.cold_start_steps` on the store's current labels
    (no student, no checkpoints), or no model when there are no labels to train on."""
    try:
        training = load_training_data(store, inputs.data, inputs.train, inputs.labels)
    except NotEnoughDataError as exc:
        log.warning("no model to score with (%s): sampling falls back to random", exc)
        return NO_SCORER
    settings = dataclasses.replace(
        inputs.settings,
        teacher_steps=inputs.sampling.cold_start_steps,
        student_steps=0,
        checkpoint_every=0,
    )
    log.info(
        "no champion yet: a teacher trained on %d labels scores the pool",
        training.n_human + training.n_weak,
    )
    result = fit(dataclasses.replace(training.data, x_eval=None, y_eval=None), settings)
    return Scorer(result.teacher, f"teacher@{training.data.fingerprint()}")
