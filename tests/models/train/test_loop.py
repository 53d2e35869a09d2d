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


def test_the_feedback_guard_switches_pseudo_labeling_off_when_precision_is_too_low():
    # A floor above any reachable precision forces the guard: from the first student
    # evaluation on, the unlabeled loss no longer counts.
    off = fit(toy_data(), settings(pseudo_label_precision_floor=1.01, guard_min_pseudo_labels=1))
    assert off.pseudo_labeling_off_at == 20  # the first evaluation of the student
    rows = [r for r in off.history if "loss" in r]
    after = [r for r in rows if r["step"] > 20]
    assert after and all(r["loss"] == pytest.approx(r["loss_sup"]) for r in after)
    assert any(r["loss_unsup"] > 0 for r in after)  # computed, just not trained on
    before = [r for r in rows if 10 < r["step"] <= 20]
    assert any(r["loss"] > r["loss_sup"] + 1e-6 for r in before)
    # with a floor the pseudo-labels clear, the guard stays quiet
    on = fit(toy_data(), settings(pseudo_label_precision_floor=0.0, guard_min_pseudo_labels=1))
    assert on.pseudo_labeling_off_at is None


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
