"""The training loop (`models/train/loop.py`): it learns, the same seed gives the same
weights, a killed run resumes to the same weights, the phases and the feedback guard,
and the package's layering."""

import ast
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from models import Callback, fit
from models.train.state import guard_fires
from tests.models.conftest import settings, toy_data

REPO = Path(__file__).resolve().parents[3]


def test_training_learns_and_reports_ssl_metrics():
    rows: list[tuple[int, dict]] = []

    class Collect(Callback):
        def on_metrics(self, step, metrics):
            rows.append((step, metrics))

    result = fit(toy_data(), settings(teacher_steps=40, student_steps=60), callbacks=[Collect()])
    assert result.steps == 100
    final = rows[-1][1]
    assert final["eval_student_accuracy"] >= 0.9
    student_rows = [m for _, m in rows if m.get("phase") == 1.0]
    assert student_rows and all(0.0 <= m["mask_rate"] <= 1.0 for m in student_rows)
    assert any(m["loss_unsup"] > 0 for m in student_rows)
    counted = sum(m[f"pseudo_labels_class_{k}"] for m in student_rows for k in range(3))
    assert counted > 0
    assert "eval_pseudo_label_precision" in final


def test_same_seed_same_weights_on_cpu():
    a = fit(toy_data(), settings())
    b = fit(toy_data(), settings())
    for pa_, pb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa_, pb)


CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.models.conftest import toy_data, settings
from models import Callback, fit
from models.train.state import guard_fires

class Hang(Callback):
    def on_progress(self, step, total):
        if step == 17:  # the checkpoint of step 15 is on disk; wait to be killed
            print("READY", flush=True)
            time.sleep(600)

fit(toy_data(), settings(), run_dir={run_dir!r}, callbacks=[Hang()])
print("FINISHED", flush=True)
"""


def test_killed_run_resumes_from_checkpoint_with_same_steps_and_weights(tmp_path: Path):
    run_dir = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(repo=str(REPO), run_dir=str(run_dir))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "READY" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "READY" in line, "the child never reached step 17"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 15

    resumed = fit(toy_data(), settings(), run_dir=run_dir)
    assert (resumed.resumed_from, resumed.steps) == (15, 30)
    assert not (run_dir / "checkpoint.pt").exists()  # removed once complete
    straight = fit(toy_data(), settings())
    for name, p in straight.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path: Path):
    fit(toy_data(), settings(student_steps=0), run_dir=tmp_path, keep_checkpoint=True)
    again = fit(toy_data(), settings(student_steps=0, lr=0.01), run_dir=tmp_path)
    assert (again.resumed_from, again.steps) == (0, 10)


def test_models_package_never_imports_prefect_or_mlflow():
    banned = {"prefect", "mlflow", "pydantic", "configs", "tasks", "flows"}
    for path in (REPO / "models").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_bf16_and_channels_last():
    result = fit(toy_data(), settings(device="cuda", teacher_steps=40, student_steps=60))
    assert result.device.startswith("cuda") and result.steps == 100


def test_human_share_changes_nothing_without_weak_labels():
    data = toy_data()
    data.human_lb = torch.ones(len(data.x_lb), dtype=torch.bool)
    plain = fit(toy_data(), settings())
    shared = fit(data, dataclasses.replace(settings(), human_share=0.5))
    for name, p in plain.model.state_dict().items():
        assert torch.equal(p, shared.model.state_dict()[name]), name


# A real feedback loop: every pseudo-label kept (fixed threshold 0), from the student
# itself, weighted 20x the labels. The student confirms its own majority guess and falls
# to one class (0.35 on the evaluation set against the teacher's 0.67, measured).
LOOP = dict(threshold="fixed", tau=0.0, lambda_u=20.0, pseudo_label_source="self")


def _evals(result) -> list[tuple[int, float, float]]:
    return [
        (int(r["step"]), r["eval_teacher_accuracy"], r["eval_student_accuracy"])
        for r in result.history
        if "eval_student_accuracy" in r
    ]


def test_the_feedback_guard_restarts_a_collapsing_student_from_the_teacher():
    unguarded = fit(toy_data(), settings(**LOOP))
    (_, teacher, collapsed), *_ = _evals(unguarded)
    assert unguarded.pseudo_labeling_off_at is None and collapsed < teacher - 0.2

    guarded = fit(toy_data(), settings(**LOOP, guard_margin=0.05, guard_warmup_steps=0))
    assert guarded.pseudo_labeling_off_at == 20  # the student's first evaluation
    assert _evals(guarded)[0][2] == collapsed  # the same run up to there
    # restarted from the teacher, then labels only: back where the teacher was
    final = _evals(guarded)[-1]
    assert final[0] == 30 and final[2] >= teacher - 0.05
    rows = [r for r in guarded.history if "loss" in r and r["step"] > 20]
    assert rows and all(r["loss"] == pytest.approx(r["loss_sup"]) for r in rows)
    assert any(r["loss_unsup"] > 0 for r in rows)  # computed, just not trained on


def test_the_feedback_guard_waits_out_the_warm_up_and_leaves_a_healthy_student_alone():
    # student evaluations at student steps 10, 20, 30, 40: the warm-up hides the first two
    warm = settings(**LOOP, student_steps=40, guard_margin=0.05, guard_warmup_steps=15)
    assert fit(toy_data(), warm).pseudo_labeling_off_at == 30
    healthy = fit(toy_data(), settings(guard_margin=0.05, guard_warmup_steps=0))
    assert healthy.pseudo_labeling_off_at is None
    assert all(student >= teacher - 0.05 for _, teacher, student in _evals(healthy))


def test_the_guard_judges_the_student_against_the_teacher_not_a_fixed_precision():
    # Issue 29's run: one label a class, seeded start; the teacher at 0.806 on gold dev and
    # pseudo-labels right 74.5% of the time is the method working, not a loop.
    s = settings(guard_margin=0.05, guard_warmup_steps=200)
    working = {
        "eval_teacher_accuracy": 0.806,
        "eval_student_accuracy": 0.79,  # the dip right after the student starts
        "eval_pseudo_label_precision": 0.745,
    }
    assert not guard_fires(working, s, student_step=100)  # in the warm-up
    assert not guard_fires({**working, "eval_student_accuracy": 0.842}, s, student_step=300)
    assert not guard_fires({**working, "eval_student_accuracy": 0.757}, s, student_step=300)
    assert guard_fires({**working, "eval_student_accuracy": 0.75}, s, student_step=300)
    assert not guard_fires({"eval_teacher_accuracy": 0.806}, s, student_step=300)  # no student
    off = dataclasses.replace(s, guard_margin=None)
    assert not guard_fires({**working, "eval_student_accuracy": 0.1}, off, student_step=300)


def test_the_student_starts_from_the_teacher_and_keeps_it_frozen():
    rows: list[dict] = []

    class Collect(Callback):
        def on_metrics(self, step, metrics):
            rows.append({"step": step, **metrics})

    alone = fit(toy_data(), settings(student_steps=0))  # the teacher phase alone
    assert alone.steps == 10 and alone.teacher is alone.model
    both = fit(toy_data(), settings(), callbacks=[Collect()])
    # the frozen teacher is the model the teacher phase ended with, to the bit
    for name, p in alone.model.state_dict().items():
        assert torch.equal(p, both.teacher.state_dict()[name]), name
    assert not any(p.requires_grad for p in both.teacher.parameters())
    # the student trained on from there: its EMA is another model
    assert any(
        not torch.equal(p, both.model.state_dict()[n]) for n, p in alone.model.state_dict().items()
    )
    phases = [(r["step"], r["phase"]) for r in rows if "phase" in r]
    assert phases == [(5, 0.0), (10, 0.0), (15, 1.0), (20, 1.0), (25, 1.0), (30, 1.0)]
