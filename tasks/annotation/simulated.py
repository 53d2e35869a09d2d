"""A simulated annotator for the embedded default (`sampling.mode: simulate`): it answers
annotation requests from the true MNIST classes, wrong on a configurable share of them,
so that `retrain` can run active-learning rounds unattended and the active-learning
benchmark can run. Only `mode: simulate` and the benchmark use it; nothing else does.
"""

from __future__ import annotations

import numpy as np

from tasks.annotation.answers import Answer
from tasks.ingest import mnist5k_pngs
from tasks.store import content_id

ANNOTATOR = "simulated-annotator"


def mnist5k_truth() -> dict[str, str]:
    """example id -> true class name, for the embedded default's 5,000 images."""
    pngs, targets = mnist5k_pngs()
    return {content_id(p): str(int(t)) for p, t in zip(pngs, targets, strict=True)}


def simulated_answers(
    requests: list[dict],
    truth: dict[str, str],
    classes: tuple[str, ...],
    error_rate: float,
    rng: np.random.Generator,
) -> list[Answer]:
    """One answer per request whose example the truth knows; with probability
    `error_rate` a uniformly chosen wrong class instead."""
    out = []
    for r in requests:
        label = truth.get(r["example_id"])
        if label is None:
            continue
        if rng.random() < error_rate:
            label = str(rng.choice([c for c in classes if c != label]))
        out.append(
            Answer(
                example_id=r["example_id"],
                label=label,
                annotator=ANNOTATOR,
                tool="simulated",
                origin=f"request {r['request_id']}",
                act=f"request {r['request_id']}",
            )
        )
    return out
