"""What the models tests share: toy data that trains in seconds on a CPU, and settings
that start from the product's (configs/default.yaml, the one source of training
defaults) and change only what a toy run needs."""

import dataclasses

import torch

from configs.schema import load_config
from models import AugmentSettings, TrainData, TrainSettings

PRODUCT: TrainSettings = load_config(None).train_settings()  # what `semilabel train` uses
AUGMENT: AugmentSettings = PRODUCT.augment

# A toy run: 3 classes, 30 steps, a checkpoint every 5; the labels alone as the start,
# pseudo-labels from the EMA, uniform labeled batches and no feedback guard unless a
# test asks for them.
TOY = dict(
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
    start="labels",
    pseudo_label_source="ema",
    human_share=0.0,
    guard_margin=None,
    seeded_student_steps=None,
)


def settings(**kw) -> TrainSettings:
    """The product's settings with a toy run's changes (`TOY`), then `kw`."""
    return dataclasses.replace(PRODUCT, **{**TOY, **kw})


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
