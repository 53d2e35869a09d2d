"""A checkpoint folder per training run (`tasks/training/run_dir.py`): a live run's folder
is never shared, a dead run's checkpoint is resumed, a restarted flow run finds its own."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from models.train import CHECKPOINT
from tasks.training import claim_run_dir

REPO = Path(__file__).resolve().parents[3]


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from tasks.training import claim_run_dir
with claim_run_dir(Path({base!r}), "k", "run-a") as d:
    (d / "checkpoint.pt").write_bytes(b"x")
    print(d, flush=True)
    time.sleep(600)
"""


def test_two_runs_with_the_same_settings_and_data_get_their_own_folders(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER.format(repo=str(REPO), base=str(tmp_path)))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        held = Path(holder.stdout.readline().strip())
        assert held.name == "train-k-run-a"
        # A concurrent run of the same key does not touch the live run's checkpoint...
        with claim_run_dir(tmp_path, "k", "run-b") as mine:
            assert mine != held and mine.name == "train-k-run-b"
        holder.kill()
        holder.wait(timeout=30)
        # ...but once its owner is gone, a new run of the same key resumes its checkpoint.
        with claim_run_dir(tmp_path, "k", "run-c") as adopted:
            assert adopted == held and (adopted / CHECKPOINT).exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_restarted_flow_run_claims_its_own_folder_first(tmp_path: Path):
    for owner in ("run-a", "run-b"):
        (tmp_path / f"train-k-{owner}").mkdir()
        (tmp_path / f"train-k-{owner}" / CHECKPOINT).write_bytes(owner.encode())
    with claim_run_dir(tmp_path, "k", "run-b") as d:
        assert (d / CHECKPOINT).read_bytes() == b"run-b"
    # finished without a checkpoint: the folder goes, the other one stays
    with claim_run_dir(tmp_path, "k", "run-a") as d:
        os.remove(d / CHECKPOINT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-k-run-b"]


def test_a_run_without_an_owner_gets_a_folder_of_its_own_and_leaves_none_behind(tmp_path: Path):
    with claim_run_dir(tmp_path, "k", None) as first, claim_run_dir(tmp_path, "k", None) as second:
        assert first != second and first.name.startswith("train-k-") and first.is_dir()
        (second / CHECKPOINT).write_bytes(b"x")  # the second one stops before it finishes
    assert [p.name for p in tmp_path.iterdir()] == [second.name]
