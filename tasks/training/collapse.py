"""Did pseudo-labeling go wrong? The run's verdict, judged on where the feedback-loop
guard fired, on the pseudo-labels' precision on gold dev against
`health.pseudo_label_precision_floor` (unless the student beat the teacher there: then
low precision is the method working from few labels), and on each class's share of the
pseudo-labels; logged as the tag `semilabel.pseudo_label_collapse` (with a warning for
each reason)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from models import TrainResult, TrainSettings
from models.collapse import FACTOR, ClassShare, pseudo_label_shares
from tasks.tracking import tidy
from tasks.training.data import TrainingSet

log = logging.getLogger(__name__)

MIN_PSEUDO_LABELS = 20  # pseudo-labels kept on gold dev before their precision is judged


@dataclass(frozen=True)
class CollapseVerdict:
    """Did pseudo-labeling go wrong? Every reason it did, everything that could not be
    judged, and what was judged fine; `line()` is the tag `semilabel.pseudo_label_collapse`."""

    collapsed: tuple[str, ...]
    not_measured: tuple[str, ...]
    fine: tuple[str, ...]

    def line(self) -> str:
        """`collapsed: ...` on any reason; else `not measured: ...` when something could
        not be judged; `ok: ...` only when both checks were measured and passed."""
        if self.collapsed:
            missing = "; not measured: " + "; ".join(self.not_measured) if self.not_measured else ""
            return "collapsed: " + "; ".join(self.collapsed) + missing
        if self.not_measured:
            return "not measured: " + "; ".join(self.not_measured + self.fine)
        return "ok: " + "; ".join(self.fine)


def collapse_verdict(
    history: Sequence[dict[str, float]],
    shares: Sequence[ClassShare],
    classes: tuple[str, ...],
    settings: TrainSettings,
    off_at: int | None,
    floor: float | None,
) -> CollapseVerdict:
    """Judge the pseudo-labels: where the guard fired (the student fell below the
    teacher), their precision on gold dev at the student's last evaluation (which the
    guard never acts on) against `floor`, and each class's share (`shares`, see
    `models.collapse`). Class shares alone miss a pseudo-labeler that is balanced and
    wrong: precision is the check that sees it. Precision below the floor is no
    collapse when the student beat the teacher on gold dev all the same (one or two
    labels a class: a teacher at 0.81 gives pseudo-labels right 75% of the time, and
    the student learns from them)."""
    collapsed: list[str] = []
    missing: list[str] = []
    fine: list[str] = []
    evals = [r for r in history if "eval_pseudo_label_count" in r]  # the student's evaluations
    if off_at is not None:
        at = next((r for r in evals if int(r["step"]) == off_at), {})
        student = at.get("eval_student_accuracy", float("nan"))
        teacher = at.get("eval_teacher_accuracy", float("nan"))
        collapsed.append(
            f"the student {student:.3g} fell more than {settings.guard_margin or 0:g} below "
            f"the teacher {teacher:.3g} on gold dev at step {off_at}, where the guard "
            "restarted it from the teacher and switched pseudo-labeling off"
        )
    if not any("eval_teacher_accuracy" in r for r in history):
        missing.append("no gold dev labels")
    elif not evals:
        missing.append("no student evaluation on gold dev")
    else:
        last = evals[-1]
        step, n = int(last["step"]), int(last["eval_pseudo_label_count"])
        precision = last.get("eval_pseudo_label_precision", float("nan"))
        student = last.get("eval_student_accuracy", float("nan"))
        teacher = last.get("eval_teacher_accuracy", float("nan"))
        if n < MIN_PSEUDO_LABELS or precision != precision:
            missing.append(
                f"{n} pseudo-labels kept on gold dev at step {step}, {MIN_PSEUDO_LABELS} needed"
            )
        elif floor is None:
            missing.append(
                f"precision {precision:.3g} at step {step} not judged: no floor "
                "(health.pseudo_label_precision_floor: null)"
            )
        elif precision < floor and student > teacher:
            fine.append(
                f"precision {precision:.3g} < floor {floor:g} at step {step}, but the student "
                f"beat the teacher on gold dev ({student:.3g} vs {teacher:.3g})"
            )
        elif precision < floor:
            if step != off_at:
                collapsed.append(f"precision {precision:.3g} < floor {floor:g} at step {step}")
        else:
            fine.append(
                f"precision {precision:.3g} >= floor {floor:g} at step {step} "
                f"({n} pseudo-labels on gold dev)"
            )
    if not shares:
        missing.append("no pseudo-labels counted for class shares")
    collapsed += [
        f"class {classes[s.index]} {s.state} "
        f"({100 * s.share:.1f}% of pseudo-labels vs {100 * s.expected:.1f}% expected)"
        for s in shares
        if s.state != "ok"
    ]
    if shares and all(s.state == "ok" for s in shares):
        fine.append(f"class shares within {FACTOR:g}x of the labeled shares")
    return CollapseVerdict(tuple(collapsed), tuple(missing), tuple(fine))


def report_pseudo_label_collapse(
    result: TrainResult,
    settings: TrainSettings,
    classes: tuple[str, ...],
    training: TrainingSet,
    floor: float | None,
) -> str:
    """Judge the run's pseudo-labels (`collapse_verdict`): each class's late share of the
    pseudo-label weight against its share of the labeled set, logged as
    `pseudo_labels/share_<class>`; a warning for each reason they collapsed; the verdict
    as the tag `semilabel.pseudo_label_collapse`. Returns the verdict's line."""
    import mlflow

    prior = [training.class_counts.get(c, 0) + 1 for c in classes]  # +1: none is impossible
    shares = pseudo_label_shares(result.history, prior)
    if shares:
        mlflow.log_metrics(
            {f"pseudo_labels/share_{classes[s.index]}": tidy(s.share) for s in shares}
        )
    for s in shares:
        if s.state != "ok":
            log.warning(
                "pseudo-labels of class %s %s: %.1f%% of the pseudo-label weight in the last "
                "quarter of the student phase, against %.1f%% of the labeled examples. The "
                "model is %s; consider train.distribution_alignment: prior, train.threshold: "
                "freematch, or more human labels of class %s",
                classes[s.index],
                s.state,
                100 * s.share,
                100 * s.expected,
                "no longer predicting it" if s.state == "collapsed" else "over-predicting it",
                classes[s.index],
            )
    verdict = collapse_verdict(
        result.history, shares, classes, settings, result.pseudo_labeling_off_at, floor
    )
    if result.pseudo_labeling_off_at is None:  # else the guard has warned already
        for reason in verdict.collapsed:
            if reason.startswith("precision"):
                log.warning(
                    "pseudo-labels collapsed: %s on gold dev (the last evaluation: too late "
                    "for the guard). The student learned from wrong pseudo-labels; check the "
                    "training labels against gold dev",
                    reason,
                )
    said = verdict.line()
    mlflow.set_tag("semilabel.pseudo_label_collapse", said)
    return said
