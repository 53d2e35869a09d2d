"""A start better than a handful of labels: features learned from the unlabeled pool
alone, and the few labels spread over the pool along them.

1. **Pre-phase** (a seeded `train.start`, `train.pretrain_steps` > 0): before the
   teacher, the network's body learns from unlabeled images only, with SimCLR's
   contrastive objective (NT-Xent): two strong views of each image should be each other's
   nearest neighbour among all views of the batch. The teacher then starts from these
   weights (its head starts fresh). The weights are cached by the caller's key (the data
   and these settings), so repeated retrains on the same snapshot don't pay for it again.
2. **Label propagation seeding** (a seeded start, `train.propagate_per_class` > 0): the
   labeled and (up to `PROPAGATION_POOL`) unlabeled images are embedded with those
   weights, linked to their k nearest neighbours by cosine similarity, and the labels
   spread over the graph (Zhou et al. 2004, what scikit-learn's LabelSpreading does). The
   most confident `propagate_per_class` examples of each class join the teacher's labeled
   set, weighted by their confidence, as weak labels would.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.augment import AugmentSettings, strong
from models.checkpoint import load_checkpoint, save_checkpoint
from models.classifier import Classifier, ClassifierConfig, to_float
from models.pool import ImagePool, take_rows

log = logging.getLogger(__name__)

PROJECTION_DIM = 64
TEMPERATURE = 0.5  # NT-Xent's softmax temperature (SimCLR's choice for small batches)
PRETRAIN_LR = 1e-3  # Adam: robust without LARS at these batch sizes
NEIGHBOURS = 10  # kNN graph for label propagation
ALPHA = 0.99  # how far labels spread (LabelSpreading's alpha)
ITERATIONS = 30
PROPAGATION_POOL = 20_000  # unlabeled examples the graph is built over, at most


@dataclass(frozen=True)
class Seeds:
    """Unlabeled examples the propagation labels for the teacher: pool positions, their
    labels and confidences (in [0, 1])."""

    index: torch.Tensor  # (S,) positions in the unlabeled pool
    labels: torch.Tensor  # (S,)
    confidence: torch.Tensor  # (S,)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's loss for two views (B, D) of the same B images: for each of the 2B views,
    cross-entropy of picking its partner among the other 2B - 1 by cosine similarity."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    b = len(z1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own partner
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, partner)


class _Projection(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, PROJECTION_DIM))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def pretrain_key(
    fingerprint: str,
    model: ClassifierConfig,
    *,
    pretrained: str | None,
    augment: AugmentSettings,
    steps: int,
    batch: int,
    seed: int,
) -> str:
    """What the cached weights depend on: the unlabeled data, the model's architecture and
    input normalization, the weights it starts from, the augmentation and these settings."""
    text = "|".join(
        str(part)
        for part in (
            fingerprint,
            sorted(model.to_dict().items()),
            pretrained,
            augment,
            steps,
            batch,
            seed,
            TEMPERATURE,
            PRETRAIN_LR,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrain(
    model: Classifier,
    x_ulb: torch.Tensor | ImagePool,
    *,
    steps: int,
    batch: int,
    augment: AugmentSettings,
    seed: int,
    device: torch.device,
    cache: Path | None = None,
    key: str = "",
) -> float:
    """Train `model`'s body on `x_ulb` alone (NT-Xent, `steps` steps of `batch` images),
    or load the weights cached under `cache`/`key`. Returns the last loss (NaN when
    loaded). The head is left as it was: the teacher learns it from the labels."""
    path = cache / f"{key}.pt" if cache is not None and key else None
    if path is not None and path.exists():
        state = load_checkpoint(path, device)
        model.load_state_dict(state["model"])
        log.info("pre-phase weights read from %s", path)
        return float("nan")
    gen = torch.Generator(device=device).manual_seed(seed + 7919)
    head = _Projection(model.net.feature_dim).to(device)
    params = [p for n, p in model.named_parameters() if not n.startswith("net.head.")]
    opt = torch.optim.Adam([*params, *head.parameters()], lr=PRETRAIN_LR, weight_decay=1e-6)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(x_ulb), (batch,), generator=gen, device=device)
        x = to_float(take_rows(x_ulb, idx).to(device, non_blocking=True))
        z1 = head(model.features(strong(x, augment, gen)))
        z2 = head(model.features(strong(x, augment, gen)))
        loss = nt_xent(z1, z2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        save_checkpoint(tmp, {"model": model.state_dict(), "key": key})
        os.replace(tmp, path)  # whole or absent: a killed run leaves no half file
    return float(loss.detach())


@torch.no_grad()
def embed(
    model: Classifier,
    x: torch.Tensor | ImagePool,
    device: torch.device,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """L2-normalized features (N, D) of uint8 images (those at `positions`, or all), in
    eval mode, read and embedded 1,024 at a time."""
    positions = torch.arange(len(x)) if positions is None else positions.cpu()
    was = model.training
    model.eval()
    out = []
    for start in range(0, len(positions), 1024):
        idx = positions[start : start + 1024]
        batch = to_float(take_rows(x, idx.to(x.device) if torch.is_tensor(x) else idx).to(device))
        out.append(F.normalize(model.features(batch).float(), dim=1))
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.net.feature_dim, device=device)


def propagate_labels(
    f_lb: torch.Tensor,
    y_lb: torch.Tensor,
    f_ulb: torch.Tensor,
    num_classes: int,
    *,
    k: int = NEIGHBOURS,
    alpha: float = ALPHA,
    iterations: int = ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label spreading over a symmetric kNN graph of L2-normalized features: labels (U,)
    and confidence (U,) (each row's share of its spread label mass) for `f_ulb`."""
    f = torch.cat([f_lb, f_ulb]).float()
    n, n_lb = len(f), len(f_lb)
    k = min(k, n - 1)
    rows, cols, vals = [], [], []
    for start in range(0, n, 2048):  # top-k neighbours a block of rows at a time
        sim = f[start : start + 2048] @ f.T
        sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = float("-inf")
        top, idx = sim.topk(k, dim=1)
        rows.append(torch.arange(start, start + len(sim), device=f.device).repeat_interleave(k))
        cols.append(idx.reshape(-1))
        vals.append(top.clamp_min(0).reshape(-1))
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    w = torch.sparse_coo_tensor(
        torch.stack([torch.cat([r, c]), torch.cat([c, r])]),
        torch.cat([v, v]),
        (n, n),
        check_invariants=False,
    )
    w = w.coalesce()
    degree = torch.sparse.sum(w, 1).to_dense().clamp_min(1e-12)
    i, j = w.indices()
    s = torch.sparse_coo_tensor(
        w.indices(), w.values() / (degree[i] * degree[j]).sqrt(), (n, n), check_invariants=False
    )
    y = torch.zeros(n, num_classes, device=f.device)
    y[torch.arange(n_lb), y_lb.to(f.device)] = 1.0
    spread = y.clone()
    for _ in range(iterations):
        spread = alpha * torch.sparse.mm(s, spread) + (1 - alpha) * y
    mass = spread[n_lb:]
    conf = mass.max(1).values / mass.sum(1).clamp_min(1e-12)
    return mass.argmax(1), conf


def choose_seeds(labels: torch.Tensor, confidence: torch.Tensor, per_class: int) -> torch.Tensor:
    """Positions of the `per_class` most confident examples of each class (fewer where a
    class has fewer), in ascending position order."""
    chosen = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).squeeze(1)
        order = confidence[members].argsort(descending=True, stable=True)
        chosen.append(members[order[:per_class]])
    return torch.cat(chosen).sort().values if chosen else labels.new_zeros(0)


def propagation_seeds(
    model: Classifier,
    x_lb: torch.Tensor,
    y_lb: torch.Tensor,
    x_ulb: torch.Tensor | ImagePool,
    *,
    num_classes: int,
    per_class: int,
    seed: int,
    device: torch.device,
) -> Seeds:
    """Embed, propagate and choose: the seeds for the teacher's labeled set. Built over
    at most PROPAGATION_POOL unlabeled examples (a seeded random subset)."""
    n = len(x_ulb)
    pool = torch.arange(n)
    if n > PROPAGATION_POOL:
        g = torch.Generator().manual_seed(seed + 104729)
        pool = torch.randperm(n, generator=g)[:PROPAGATION_POOL].sort().values
    f_lb, f_ulb = embed(model, x_lb, device), embed(model, x_ulb, device, pool)
    labels, conf = propagate_labels(f_lb, y_lb, f_ulb, num_classes)
    chosen = choose_seeds(labels, conf, per_class)
    return Seeds(pool.to(chosen.device)[chosen], labels[chosen], conf[chosen])
