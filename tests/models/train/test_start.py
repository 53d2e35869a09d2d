"""The start of a run (`models/train/start.py`): `train.start` resolved against the
human labels, and the better start (the pre-phase, propagation seeds) wired into `fit`."""

from pathlib import Path

import pytest
import torch

from models import Callback, fit
from models.classifier import ClassifierConfig, build_classifier
from models.ranks import Ranks
from models.train.start import better_start, choose_start, scheduled
from tests.models.conftest import settings, toy_data

CPU = torch.device("cpu")


def test_fit_pretrains_seeds_the_labeled_set_and_resumes_the_same(tmp_path: Path):
    s = settings(start="seeded", pretrain_steps=5, pretrain_batch_size=32, propagate_per_class=4)
    rows: list[dict] = []

    class Collect(Callback):
        def on_metrics(self, step, metrics):
            rows.append(metrics)

    class Stop(Callback):
        def on_progress(self, step, total):
            if step == 17:
                raise KeyboardInterrupt

    straight = fit(toy_data(), s, callbacks=[Collect()], pretrain_cache=tmp_path / "cache")
    assert rows[0] == {"start_seeded": 1.0, "smallest_class_labels": 6.0}  # toy: 11/6/13
    assert rows[1]["pretrain_loss"] > 0 and rows[2]["seeded_labels"] == 12.0  # 4 x 3 classes
    with pytest.raises(KeyboardInterrupt):
        fit(
            toy_data(),
            s,
            run_dir=tmp_path / "run",
            callbacks=[Stop()],
            pretrain_cache=tmp_path / "cache",
        )
    resumed = fit(toy_data(), s, run_dir=tmp_path / "run", pretrain_cache=tmp_path / "cache")
    assert resumed.resumed_from == 15
    for name, p in straight.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name
    # without the start, training differs: the settings reached the loop
    plain = fit(toy_data(), settings())
    assert any(
        not torch.equal(p, plain.model.state_dict()[n])
        for n, p in straight.model.state_dict().items()
    )


def test_auto_start_is_seeded_when_the_fewest_human_labels_are_few():
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    auto = settings(start="auto", few_labels=2)
    assert not choose_start(auto, y, None).seeded  # 3 human labels in every class
    # two of class 2's labels are weak (label model): one human label left there
    human = torch.tensor([True] * 7 + [False] * 2)
    choice = choose_start(auto, y, human)
    assert choice.seeded and choice.smallest_class == 1
    assert "fewest human labels has 1" in choice.reason and "seeded start" in choice.reason
    assert not choose_start(settings(start="auto", few_labels=0), y, human).seeded
    # a class with no label at all counts as 0
    four = settings(num_classes=4, start="auto", few_labels=0)
    assert choose_start(four, y, None).smallest_class == 0 and choose_start(four, y, None).seeded
    # labels and seeded do not look at the counts
    assert not choose_start(settings(start="labels"), y, human).seeded
    assert choose_start(settings(start="seeded"), y, None).seeded


def test_fit_starts_seeded_only_when_auto_finds_few_labels():
    rows: list[dict] = []

    class Collect(Callback):
        def on_metrics(self, step, metrics):
            rows.append(metrics)

    small = dict(start="auto", pretrain_steps=3, pretrain_batch_size=32, propagate_per_class=2)
    fit(toy_data(), settings(few_labels=5, **small), callbacks=[Collect()])  # fewest: 6
    assert rows[0] == {"start_seeded": 0.0, "smallest_class_labels": 6.0}
    assert not any("pretrain_loss" in r or "seeded_labels" in r for r in rows)
    rows.clear()
    fit(toy_data(), settings(few_labels=6, **small), callbacks=[Collect()])
    assert rows[0] == {"start_seeded": 1.0, "smallest_class_labels": 6.0}
    assert rows[1]["pretrain_loss"] > 0 and rows[2]["seeded_labels"] == 6.0  # 2 x 3 classes


def test_a_run_that_reads_the_cached_pre_phase_trains_the_same_as_the_one_that_wrote_it(
    tmp_path: Path,
):
    # the pre-phase draws from its own generator and its projection head's init is not
    # used after it: reading the weights instead of training them changes nothing later
    s = settings(start="seeded", pretrain_steps=3, pretrain_batch_size=32, propagate_per_class=2)
    wrote = fit(toy_data(), s, pretrain_cache=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    read = fit(toy_data(), s, pretrain_cache=tmp_path)
    for name, p in wrote.model.state_dict().items():
        assert torch.equal(p, read.model.state_dict()[name]), name


def test_propagation_seeds_join_the_labeled_set_as_weighted_weak_labels():
    data = toy_data()
    n = len(data.x_lb)
    s = settings(start="seeded", pretrain_steps=0, propagate_per_class=2)
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig("small_cnn", 3, 1, 16, (0.1,), (0.2,)))
    start = better_start(
        model, data, data.x_lb, data.y_lb, data.w_lb, data.x_ulb, s, CPU, Ranks(), None
    )
    assert [list(r) for r in start.rows] == [
        ["start_seeded", "smallest_class_labels"],
        ["seeded_labels"],
    ]  # no pre-phase row: pretrain_steps 0
    assert len(start.x_lb) == len(start.y_lb) == len(start.w_lb) == len(start.human_lb) == n + 6
    assert torch.equal(start.x_lb[:n], data.x_lb) and torch.equal(start.y_lb[:n], data.y_lb)
    assert start.human_lb[:n].all() and not start.human_lb[n:].any()  # the seeds are weak
    assert torch.bincount(start.y_lb[n:], minlength=3).tolist() == [2, 2, 2]
    assert bool(((start.w_lb[n:] > 0) & (start.w_lb[n:] <= 1)).all())  # their confidence
    for image in start.x_lb[n:]:  # each seed is an image of the unlabeled pool
        assert bool((data.x_ulb == image).flatten(1).all(1).any())
    # the labels alone: nothing added
    alone = better_start(
        model, data, data.x_lb, data.y_lb, data.w_lb, data.x_ulb, settings(), CPU, Ranks(), None
    )
    assert alone.x_lb is data.x_lb and alone.rows == [start.rows[0] | {"start_seeded": 0.0}]


def test_a_seeded_start_trains_its_student_at_least_seeded_student_steps():
    y, human = torch.tensor([0, 0, 1, 1, 2]), None  # class 2 has one human label
    few = settings(start="auto", few_labels=2, student_steps=20, seeded_student_steps=50)
    assert scheduled(few, y, human).student_steps == 50
    many = settings(start="auto", few_labels=0, student_steps=20, seeded_student_steps=50)
    assert scheduled(many, y, human).student_steps == 20  # the labels alone: unchanged

    def steps(student: int, seeded: int | None) -> int:
        s = settings(start="seeded", student_steps=student, seeded_student_steps=seeded)
        return scheduled(s, y, human).student_steps

    assert steps(80, 50) == 80  # a longer schedule is kept (a GPU profile)
    assert steps(0, 50) == 0  # a teacher-only run stays one
    assert steps(20, None) == 20  # null: train.student_steps
    # wired into fit: the run ends after teacher + seeded student steps
    run = fit(
        toy_data(),
        settings(start="seeded", pretrain_steps=0, propagate_per_class=0, seeded_student_steps=30),
    )
    assert run.steps == 10 + 30
