"""The better start's pieces (`models/pretrain.py`): the contrastive pre-phase, its
cache, label propagation and the seeds it picks, each against hand-worked numbers.
(Wired through `fit`: tests/models/train/test_start.py.)"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from models.classifier import ClassifierConfig, build_classifier
from models.pretrain import choose_seeds, nt_xent, pretrain, pretrain_key, propagate_labels
from tests.models.conftest import AUGMENT, toy_data

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
    aug = AUGMENT
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


def test_the_cache_key_changes_with_everything_the_weights_depend_on():
    config = ClassifierConfig("small_cnn", 3, 3, 16, (0.1,) * 3, (0.2,) * 3)
    base = dict(pretrained=None, augment=AUGMENT, steps=300, batch=256, seed=0)
    key = pretrain_key("pool-a", config, **base)
    assert key == pretrain_key("pool-a", config, **base)  # the same run finds its weights
    others = [
        pretrain_key("pool-b", config, **base),
        pretrain_key("pool-a", dataclasses.replace(config, network="resnet18"), **base),
        pretrain_key("pool-a", dataclasses.replace(config, normalize="per_image"), **base),
        pretrain_key("pool-a", dataclasses.replace(config, stem="torchvision"), **base),
        pretrain_key("pool-a", dataclasses.replace(config, image_size=32), **base),
        pretrain_key("pool-a", config, **{**base, "pretrained": "imagenet"}),
        pretrain_key(
            "pool-a",
            config,
            **{**base, "augment": dataclasses.replace(AUGMENT, colour="invariant")},
        ),
        pretrain_key(
            "pool-a", config, **{**base, "augment": dataclasses.replace(AUGMENT, flip=True)}
        ),
        pretrain_key("pool-a", config, **{**base, "steps": 301}),
        pretrain_key("pool-a", config, **{**base, "seed": 1}),
    ]
    assert len({key, *others}) == 1 + len(others)
