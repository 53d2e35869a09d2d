"""The exponential moving average of the student's weights (`models/ema.py`)."""

import pytest
import torch

from models.ema import ModelEMA


def test_ema_update_is_exact():
    online = torch.nn.BatchNorm1d(2)
    ema = ModelEMA(online, decay=0.9)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([2.0, 3.0]))
        online.running_mean.copy_(torch.tensor([1.0, -1.0]))
        online.num_batches_tracked.fill_(5)
    ema.update(online)
    # weight was (1, 1): 0.9 * 1 + 0.1 * w
    assert torch.allclose(ema.module.weight, torch.tensor([1.1, 1.2]))
    assert torch.allclose(ema.module.running_mean, torch.tensor([0.1, -0.1]))
    assert int(ema.module.num_batches_tracked) == 5
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_the_decay_must_be_below_one():
    with pytest.raises(ValueError, match="EMA decay"):
        ModelEMA(torch.nn.Linear(2, 2), decay=1.0)
