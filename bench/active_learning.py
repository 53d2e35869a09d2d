"""Active-learning benchmark: which `train` strategy makes a small annotation budget count.

    python -m bench.active_learning                      # what `make bench` runs
    python -m bench.active_learning --seeds 0 --rounds 3 --no-results   # a quick look

MNIST-5k (the embedded default's 5,000 images), the gold holdout split as the product
splits it (by id hash; accuracy is measured on the gold *test* part). Each seed starts
from 1 human label per class outside gold (chosen by a seeded hash), then runs
`--rounds` rounds: train, score the unlabeled non-gold pool with that model, ask for
`--per-round` labels chosen by the strategy, and let the simulated annotator answer
them from the MNIST truth. Every strategy of `tasks.sampling.strategies` runs from the
same start (round 0 is shared), with the same seeds.

Training is the product's `models.fit` on a short CPU schedule: the supervised teacher
only, `--steps` steps of batch 32 (the semi-supervised student would multiply the
time by ~4 across 100+ trainings). Target (issue 11): the best strategy reaches, by
round 3, the accuracy random reaches at round 5.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.common import machine_line, update_results, verdict

SECTION = "## Active learning (bench/active_learning)"


@dataclass
class Data:
    images: torch.Tensor  # (N, 1, 28, 28) uint8
    labels: np.ndarray  # (N,) true classes
    ids: list[str]
    pool: np.ndarray  # non-gold rows
    test: np.ndarray  # gold test rows


def load_mnist5k() -> Data:
    from configs.schema import load_config
    from tasks.images.decode import decode_images
    from tasks.ingest import mnist5k_pngs
    from tasks.store import TEST, GoldSplit, content_id

    cfg = load_config()
    pngs, targets = mnist5k_pngs()
    ids = [content_id(p) for p in pngs]
    parts = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share).parts(ids)
    images = torch.from_numpy(decode_images(pngs, 28, 1))
    return Data(
        images,
        np.asarray(targets, dtype=np.int64),
        ids,
        np.flatnonzero(parts == ""),
        np.flatnonzero(parts == TEST),
    )


def first_labels(data: Data, seed: int) -> list[int]:
    """One pool row per class, by a seeded hash of the id (as the ingest source does)."""
    order = sorted(
        data.pool,
        key=lambda i: hashlib.blake2b(f"{seed}:{data.ids[i]}".encode(), digest_size=8).digest(),
    )
    picked: dict[int, int] = {}
    for i in order:
        picked.setdefault(int(data.labels[i]), int(i))
    return sorted(picked.values())


def train(data: Data, labeled: list[int], steps: int, seed: int):  # noqa: ANN201
    from configs.schema import load_config
    from models import TrainData, fit

    settings = dataclasses.replace(
        load_config().train_settings(),
        teacher_steps=steps,
        student_steps=0,
        checkpoint_every=0,
        device="cpu",
        seed=seed,
    )
    lb = torch.tensor(labeled)
    td = TrainData(
        x_lb=data.images[lb],
        y_lb=torch.from_numpy(data.labels[labeled]),
        w_lb=torch.ones(len(labeled)),
        x_ulb=data.images[torch.from_numpy(data.pool)],
    )
    return fit(td, settings).teacher


@torch.no_grad()
def predict(model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    probs, emb = [], []
    for i in range(0, len(images), 1024):
        z, logits = model.features_and_logits(images[i : i + 1024].float() / 255.0)
        probs.append(torch.softmax(logits, 1).numpy())
        emb.append(z.numpy())
    return np.concatenate(probs), np.concatenate(emb)


def accuracy(model, data: Data) -> float:  # noqa: ANN001
    probs, _ = predict(model, data.images[torch.from_numpy(data.test)])
    return float((probs.argmax(1) == data.labels[data.test]).mean())


def run_strategy(
    data: Data,
    strategy: str,
    seed: int,
    start: list[int],
    model0,
    acc0: float,
    args,  # noqa: ANN001
) -> list[float]:
    from tasks.sampling.strategies import select

    rng = np.random.default_rng([seed, 7])
    labeled, model, accs = list(start), model0, [acc0]
    for _ in range(args.rounds):
        pool = np.array(sorted(set(data.pool.tolist()) - set(labeled)))
        probs, emb = predict(model, data.images[torch.from_numpy(pool)])
        anchors = predict(model, data.images[torch.tensor(labeled)])[1]
        sel = select(strategy, probs, emb, args.per_round, rng, anchors)
        labeled += pool[sel.rows].tolist()  # the simulated annotator: the truth
        model = train(data, labeled, args.steps, seed)
        accs.append(accuracy(model, data))
    return accs


def command(args: argparse.Namespace) -> str:
    extra = f" --seeds {','.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] else ""
    return f"python -m bench.active_learning{extra}"


def main() -> None:
    from tasks.sampling.strategies import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=20)
    p.add_argument("--steps", type=int, default=200, help="teacher steps per training")
    p.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(2)
    start_time = time.perf_counter()
    data = load_mnist5k()
    print(
        f"MNIST-5k: pool {len(data.pool)}, gold test {len(data.test)}; seeds {args.seeds}, "
        f"{args.rounds} rounds of {args.per_round}, teacher {args.steps} steps"
    )
    curves: dict[str, list[list[float]]] = {s: [] for s in args.strategies}
    for seed in args.seeds:
        start = first_labels(data, seed)
        model0 = train(data, start, args.steps, seed)
        acc0 = accuracy(model0, data)
        for strategy in args.strategies:
            t = time.perf_counter()
            accs = run_strategy(data, strategy, seed, start, model0, acc0, args)
            curves[strategy].append(accs)
            print(
                f"seed {seed} {strategy:>16}: "
                + " ".join(f"{a:.3f}" for a in accs)
                + f"  ({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
    mean = {
        s: [statistics.mean(c[r] for c in cs) for r in range(args.rounds + 1)]
        for s, cs in curves.items()
    }
    r3, r5 = min(3, args.rounds), args.rounds
    best = max((s for s in args.strategies if s != "random"), key=lambda s: mean[s][r3])
    ok = "random" in mean and mean[best][r3] >= mean["random"][r5]
    header = (
        "| strategy | "
        + " | ".join(
            f"round {r} ({10 + r * args.per_round} labels)" for r in range(args.rounds + 1)
        )
        + " |"
    )
    lines = [
        f"Machine: {machine_line(torch=torch.__version__)}.",
        "",
        f"MNIST-5k, gold test part ({len(data.test)} labels) accuracy, mean over seeds "
        f"{args.seeds} (each seed's start: 1 human label per class; +{args.per_round} "
        f"labels a round from the simulated annotator). Training: `models.fit`, supervised "
        f"teacher only, {args.steps} steps of batch 32, CPU (a short schedule: the student "
        "would quadruple the time over the run's trainings). Every strategy starts from the "
        "same round-0 model per seed.",
        "",
        header,
        "|---|" + "---:|" * (args.rounds + 1),
    ]
    for s in args.strategies:
        lines.append(
            f"| {s}{' **(best at round ' + str(r3) + ')**' if s == best else ''} | "
            + " | ".join(f"{a:.3f}" for a in mean[s])
            + " |"
        )
    lines += [
        "",
        f"**{best} at round {r3}: {mean[best][r3]:.3f} vs random at round {r5}: "
        f"{mean.get('random', [float('nan')] * (r5 + 1))[r5]:.3f} (target: best by round 3 "
        f">= random at round 5: {verdict(ok)})**",
        "",
        "Per seed, round by round: "
        + "; ".join(
            f"{s} " + " / ".join(" ".join(f"{a:.3f}" for a in c) for c in curves[s])
            for s in args.strategies
        ),
        "",
        f"Command: `{command(args)}` ({time.perf_counter() - start_time:.0f} s).",
    ]
    print("\n".join(lines))
    if not args.no_results:
        update_results(SECTION, lines, notes="### Active learning notes")


if __name__ == "__main__":
    main()
