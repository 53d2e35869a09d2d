"""The better start: the contrastive pre-phase, its cache, label propagation and the
seeds it adds, each against hand-worked numbers, and wired through `fit`."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from models import AugmentSettings, Callback, fit
from models.classifier import ClassifierConfig, build_classifier
from models.pretrain import choose_seeds, nt_xent, pretrain, pretrain_key, propagate_labels
from models.train.start import choose_start
from tests.models.test_train import settings, toy_data

CPU = torch.device("cpu")


def test_nt_xent_matches_hand_computation_and_reaches_both_views():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    z2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)  # same directions
    loss = nt_xent(z1, z2, temperature=0.5)
    # each view: its partner at cosine 1, the two others at 0 -> logits (2, 0, 0) / one
    # right answer: -log(e^2 / (e^2 + 2))
    assert float(loss) == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)
    loss.backward()
    assert z1.grad is not None and z2.grad is not None
    # swapping partners makes it worse: the objective tells pairs apart
    assert float(nt_xent(z1, z2.flip(0), temperature=0.5)) > float(loss)


def test_labels_spread_along_the_graph_to_each_cluster():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(
        torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(20, 3, generator=g), dim=1
    )
    b = torch.nn.functional.normalize(
        torch.tensor([0.0, 1.0, 0.0]) + 0.05 * torch.randn(20, 3, generator=g), dim=1
    )
    f_lb, y_lb = torch.stack([a[0], b[0]]), torch.tensor([0, 1])
    f_ulb = torch.cat([a[1:], b[1:]])
    labels, conf = propagate_labels(f_lb, y_lb, f_ulb, num_classes=2, k=5)
    assert labels.tolist() == [0] * 19 + [1] * 19  # each cluster takes its one label
    assert conf.min() > 0.99
    # a third class nobody labeled gets no mass; confidence stays in [0, 1]
    labels3, conf3 = propagate_labels(f_lb, y_lb, f_ulb, num_classes=3, k=5)
    assert labels3.tolist() == labels.tolist() and float(conf3.max()) <= 1.0


def test_seeds_are_the_most_confident_of_each_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    conf = torch.tensor([0.5, 0.9, 0.7, 0.8, 0.95, 0.6])
    assert choose_seeds(labels, conf, 2).tolist() == [1, 2, 3, 4, 5]
    assert choose_seeds(labels, conf, 1).tolist() == [1, 4, 5]


def _model():
    return build_classifier(ClassifierConfig("small_cnn", 3, 1, 16, (0.1,), (0.2,)))


def test_the_pre_phase_learns_and_its_weights_are_cached_whole(tmp_path: Path):
    data = toy_data()
    aug = AugmentSettings()
    torch.manual_seed(0)
    model = _model()
    first = pretrain(model, data.x_ulb, steps=1, batch=32, augment=aug, seed=0, device=CPU)
    torch.manual_seed(0)
    model = _model()
    kw = dict(batch=32, augment=aug, seed=0, device=CPU, cache=tmp_path, key="k1")
    later = pretrain(model, data.x_ulb, steps=40, **kw)
    assert later < first  # 40 steps of NT-Xent lower it
    assert [p.name for p in tmp_path.iterdir()] == ["k1.pt"]  # no temp file left
    again = _model()
    assert math.isnan(pretrain(again, data.x_ulb, steps=40, **kw))  # read, not trained
    for name, p in model.state_dict().items():
        assert torch.equal(p, again.state_dict()[name]), name
    other = _model()
    assert not math.isnan(pretrain(other, data.x_ulb, steps=2, **{**kw, "key": "k2"}))


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


def test_the_cache_key_changes_with_everything_the_weights_depend_on():
    config = ClassifierConfig("small_cnn", 3, 3, 16, (0.1,) * 3, (0.2,) * 3)
    base = dict(pretrained=None, augment=AugmentSettings(), steps=300, batch=256, seed=0)
    key = pretrain_key("pool-a", config, **base)
    assert key == pretrain_key("pool-a", config, **base)  # the same run finds its weights
    others = [
        pretrain_key("pool-b", config, **base),
        pretrain_key("pool-a", dataclasses.replace(config, network="resnet18"), **base),
        pretrain_key("pool-a", dataclasses.replace(config, normalize="per_image"), **base),
        pretrain_key("pool-a", dataclasses.replace(config, stem="torchvision"), **base),
        pretrain_key("pool-a", dataclasses.replace(config, image_size=32), **base),
        pretrain_key("pool-a", config, **{**base, "pretrained": "imagenet"}),
        pretrain_key("pool-a", config, **{**base, "augment": AugmentSettings(colour="invariant")}),
        pretrain_key("pool-a", config, **{**base, "augment": AugmentSettings(flip=True)}),
        pretrain_key("pool-a", config, **{**base, "steps": 301}),
        pretrain_key("pool-a", config, **{**base, "seed": 1}),
    ]
    assert len({key, *others}) == 1 + len(others)
