"""The training loop: determinism, resume after SIGKILL, early device errors, layering."""

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

from models import Callback, TrainData, TrainSettings, UnsafeCheckpointError, fit, resolve_device
from models.train import labeled_groups, sample_labeled

REPO = Path(__file__).resolve().parents[2]


def toy_data(n_lb: int = 30, n_ulb: int = 300, seed: int = 0) -> TrainData:
    """3 classes on 16x16: a bright 4x4 square in the left, middle or right third."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
        rows = torch.randint(2, 10, (n,), generator=g)
        for i in range(n):
            c0 = 1 + 5 * int(y[i])
            x[i, 0, rows[i] : rows[i] + 4, c0 : c0 + 4] = 250
        return x, y

    x_lb, y_lb = make(n_lb)
    x_ulb, _ = make(n_ulb)
    x_ev, y_ev = make(150)
    return TrainData(x_lb, y_lb, torch.ones(n_lb), x_ulb, x_ev, y_ev)


def settings(**kw) -> TrainSettings:
    base = dict(
        num_classes=3,
        teacher_steps=10,
        student_steps=20,
        batch_size=8,
        uratio=2,
        lr=0.05,
        eval_every=10,
        log_every=5,
        checkpoint_every=5,
        device="cpu",
        seed=3,
    )
    return TrainSettings(**{**base, **kw})


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
sys.path.insert(0, {tests!r})
from test_train import toy_data, settings
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
    script.write_text(
        textwrap.dedent(
            CHILD.format(repo=str(REPO), tests=str(Path(__file__).parent), run_dir=str(run_dir))
        )
    )
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_fails_early():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


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


def test_a_labeled_batch_keeps_its_share_of_human_labels():
    cpu = torch.device("cpu")
    human_lb = torch.zeros(1000, dtype=torch.bool)
    human_lb[:10] = True  # 10 human labels among 990 weak ones
    groups = labeled_groups(human_lb, 0.5, 32, cpu)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = sample_labeled(1000, groups, 32, gen, cpu)
        assert idx.shape == (32,) and int(human_lb[idx].sum()) == 16
    # Uniform draws (the default) give about 0.3 human rows per batch of 32.
    uniform = [int(human_lb[sample_labeled(1000, None, 32, gen, cpu)].sum()) for _ in range(20)]
    assert sum(uniform) < 20
    # Nothing to balance: uniform draws.
    assert labeled_groups(torch.ones(5, dtype=torch.bool), 0.5, 32, cpu) is None
    assert labeled_groups(human_lb, 0.0, 32, cpu) is None


def test_human_share_changes_nothing_without_weak_labels():
    data = toy_data()
    data.human_lb = torch.ones(len(data.x_lb), dtype=torch.bool)
    plain = fit(toy_data(), settings())
    shared = fit(data, dataclasses.replace(settings(), human_share=0.5))
    for name, p in plain.model.state_dict().items():
        assert torch.equal(p, shared.model.state_dict()[name]), name


class _Payload:
    """Unpickling this runs `touch <marker>`: what a planted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_crafted_to_run_code_is_refused_and_never_run(tmp_path: Path):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"step": 5, "settings": {}, "payload": _Payload(marker)}, run_dir / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpointError, match="could run code.*Delete it"):
        fit(toy_data(), settings(), run_dir=run_dir)
    assert not marker.exists()
    # the same file through pickle would have run the payload: the test is not vacuous
    torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path: Path):
    fit(toy_data(), settings(), run_dir=tmp_path, keep_checkpoint=True)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no error: safe
    assert state["step"] == 30
    assert state["classifier"]["network"] == "small_cnn" and state["classifier"]["num_classes"] == 3


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
