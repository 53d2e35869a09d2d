"""The pseudo-label collapse verdict (`tasks/training/collapse.py`): said ok only when
measured and fine, collapsed where the guard fired, on low precision on gold dev (unless
the student beat the teacher) or on a class that vanished, and not measured when there
is nothing to judge; tagged on the MLflow run."""

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from configs.schema import Config, load_config
from flows.train import training_inputs
from models import TrainResult
from tasks.store import content_id, gold_mask
from tasks.tracking import ensure_experiment
from tasks.training import train_and_log
from tasks.training.collapse import report_pseudo_label_collapse
from tests.conftest import ingest_folder


def _label_store(tmp_path: Path, *, shifted: bool, **overrides: object) -> Config:
    """240 digit images in 3 classes, 150 labeled. `shifted`: every training label is
    wrong the same way (class c filed as c+1) while the gold labels are right: the
    teacher learns the shift, so its pseudo-labels are as balanced across classes as
    the labels and almost never right on gold dev."""
    from tests.conftest import digit_png, tiny_run_overrides, write

    folder = tmp_path / "images"
    for i in range(240):
        image = digit_png(i % 3, i)
        gold = bool(gold_mask([content_id(image)], 0.3, "gold-v1")[0])
        label = i % 3 if gold or not shifted else (i % 3 + 1) % 3
        write(folder / ("unlabeled" if i >= 150 else str(label)) / f"{i}.png", image)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(overrides={**tiny_run_overrides(tmp_path, folder, tracking), **overrides})
    assert (cfg.gold.fraction, cfg.gold.salt) == (0.3, "gold-v1")
    ingest_folder(cfg, folder, "f")
    return cfg


@pytest.mark.slow
def test_balanced_but_wrong_pseudo_labels_are_tagged_collapsed_not_ok(tmp_path: Path):
    # Issue 24: pseudo-labels 7% right on gold dev, every class at its share: the tag said ok.
    # Evaluated at the end only, where the guard no longer acts:
    steps = {"train.teacher_steps": 15, "train.student_steps": 5}
    cfg = _label_store(tmp_path, shifted=True, **steps)
    summary, _ = train_and_log(training_inputs(cfg))
    assert summary.pseudo_label_precision < 0.2 and summary.pseudo_labeling_off_at is None
    assert summary.student_gold_accuracy <= summary.teacher_gold_accuracy  # no better
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    said = client.get_run(summary.mlflow_run_id).data.tags["semilabel.pseudo_label_collapse"]
    precision = f"{summary.pseudo_label_precision:.3g}"
    assert said.startswith(f"collapsed: precision {precision} < floor 0.8 at step 20")
    assert said == summary.pseudo_label_collapse


@pytest.mark.slow
def test_a_student_feeding_on_its_own_mistakes_is_restarted_and_tagged(tmp_path: Path):
    # A real feedback loop (every pseudo-label kept, from the student itself, weighted 20x
    # the labels), judged from the first student evaluation on: the guard fires, and the
    # run's tag and log say where and why.
    loop = {
        "train.teacher_steps": 15,
        "train.student_steps": 20,
        "train.eval_every": 5,
        "train.threshold": "fixed",
        "train.tau": 0.01,
        "train.lambda_u": 20.0,
        "train.pseudo_label_source": "self",
        "health.guard_warmup_steps": 0,
    }
    cfg = _label_store(tmp_path, shifted=False, **loop)
    summary, result = train_and_log(training_inputs(cfg))
    off = summary.pseudo_labeling_off_at
    assert off is not None and 15 < off < 35
    at = next(r for r in result.history if r["step"] == off and "eval_student_accuracy" in r)
    assert at["eval_student_accuracy"] < at["eval_teacher_accuracy"] - 0.05
    said = mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_run(summary.mlflow_run_id).data.tags
    assert re.match(
        rf"collapsed: the student [\d.]+ fell more than 0\.05 below the teacher [\d.]+ on "
        rf"gold dev at step {off}, where the guard restarted it from the teacher and "
        "switched pseudo-labeling off",
        said["semilabel.pseudo_label_collapse"],
    )
    # restarted from the teacher: the model it ends with is no worse than the teacher
    assert summary.student_gold_accuracy >= summary.teacher_gold_accuracy - 0.05


def _history(
    precision: float, count: float, *, shares=(34.0, 33.0, 33.0), student: float = 0.9
) -> list[dict]:
    """A run's rows: the teacher's evaluation, late pseudo-label counts a class, and the
    student's last evaluation on gold dev (the teacher at 0.9 there)."""
    late = {f"pseudo_labels_class_{k}": v for k, v in enumerate(shares)}
    student_eval = {
        "eval_teacher_accuracy": 0.9,
        "eval_student_accuracy": student,
        "eval_pseudo_label_count": count,
        "eval_pseudo_label_precision": precision,
    }
    return [
        {"step": 30.0, "eval_teacher_accuracy": 0.9},
        {"step": 60.0, **late},
        {"step": 60.0, **student_eval},
    ]


CLASSES = ("0", "1", "2")


@pytest.fixture(scope="module")
def collapse_tracking(tmp_path_factory) -> str:
    """One real MLflow store (SQLite) for the verdict cases: making one takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('collapse') / 'mlflow.db'}"


BALANCED = "class shares within 3x of the labeled shares"


@pytest.mark.parametrize(
    ("history", "floor", "off_at", "said"),
    [
        (  # the reviewer's run
            _history(0.07, 40),
            0.8,
            None,
            "collapsed: precision 0.07 < floor 0.8 at step 60",
        ),
        (
            _history(0.9, 40),
            0.8,
            None,
            f"ok: precision 0.9 >= floor 0.8 at step 60 (40 pseudo-labels on gold dev); {BALANCED}",
        ),
        (
            _history(0.9, 40)[:2]
            + [{**_history(0.1, 30, student=0.5)[2], "step": 40.0}, _history(0.9, 40)[2]],
            0.8,
            40,
            "collapsed: the student 0.5 fell more than 0.05 below the teacher 0.9 on gold dev "
            "at step 40, where the guard restarted it from the teacher and switched "
            "pseudo-labeling off",
        ),
        (  # issue 29: one label a class, the student past the teacher on imperfect labels
            _history(0.745, 400, student=0.93),
            0.8,
            None,
            "ok: precision 0.745 < floor 0.8 at step 60, but the student beat the teacher on "
            f"gold dev (0.93 vs 0.9); {BALANCED}",
        ),
        (
            [r for r in _history(0.07, 40) if "eval_teacher_accuracy" not in r],
            0.8,
            None,
            f"not measured: no gold dev labels; {BALANCED}",
        ),
        (
            _history(0.5, 4),
            0.8,
            None,
            f"not measured: 4 pseudo-labels kept on gold dev at step 60, 20 needed; {BALANCED}",
        ),
        (
            _history(0.07, 40),
            None,
            None,
            "not measured: precision 0.07 at step 60 not judged: no floor "
            f"(health.pseudo_label_precision_floor: null); {BALANCED}",
        ),
        (
            _history(0.95, 40, shares=(50.0, 49.0, 1.0)),
            0.8,
            None,
            "collapsed: class 2 collapsed (1.0% of pseudo-labels vs 33.3% expected)",
        ),
        (
            _history(0.95, 40, shares=(0.0, 0.0, 0.0)),
            0.8,
            None,
            "not measured: no pseudo-labels counted for class shares; precision 0.95 >= floor "
            "0.8 at step 60 (40 pseudo-labels on gold dev)",
        ),
    ],
    ids=[
        "low-precision",
        "ok",
        "guard-off",
        "low-precision-student-better",
        "no-gold-dev",
        "too-few",
        "no-floor",
        "class",
        "none",
    ],
)
def test_the_collapse_tag_says_ok_only_when_measured_and_fine(
    collapse_tracking: str, caplog, history, floor, off_at, said
):
    result = TrainResult(None, None, 60, 0, "cpu", 0.0, history, off_at)  # type: ignore[arg-type]
    product = load_config(None).train_settings()
    settings = dataclasses.replace(product, num_classes=3)
    training = SimpleNamespace(class_counts={"0": 9, "1": 9, "2": 9})  # prior: a third each
    ensure_experiment(collapse_tracking, "collapse")
    with mlflow.start_run() as run, caplog.at_level("WARNING"):
        assert report_pseudo_label_collapse(result, settings, CLASSES, training, floor) == said
    logged = mlflow.MlflowClient(collapse_tracking).get_run(run.info.run_id).data
    assert logged.tags["semilabel.pseudo_label_collapse"] == said
    if "class 2 collapsed" in said:
        assert "pseudo-labels of class 2 collapsed" in caplog.text
        assert "distribution_alignment" in caplog.text
        assert logged.metrics["pseudo_labels/share_2"] == pytest.approx(0.01)
    if said.startswith("collapsed: precision") and off_at is None:
        assert "pseudo-labels collapsed: precision" in caplog.text
