"""Inference throughput: scoring images the way sampling, the gate and the monitor do,
in channels_last (`models.inference_input`, the default) against the plain layout.

    python -m bench.inference                  # CPU, small_cnn, 3x64x64 and 1x28x28
    python -m bench.inference --device cuda

For each image shape, the same model and the same uint8 images (a fixed seed) are
scored batch by batch (`inference_rows` images a pass, the softmax included) by the
product's `predict_proba` (channels_last) and by the same loop in the plain layout,
alternating, `--repeats` times; the best run of each counts, every run is printed, and
the probabilities of the two are compared. The 1-minute load and a 2-process CPU check
say whether the cores were free. Results go to the "## Inference (bench/inference)"
section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import UTC, datetime

import torch

from bench.common import cpu_scaling, load_now, machine_line, update_results
from models import inference_rows, predict_proba
from models.classifier import ClassifierConfig, build_classifier, to_float

SECTION = "## Inference (bench/inference)"
NOTES = "### Inference notes"
SHAPES = ((3, 64, 64), (1, 28, 28))


@torch.no_grad()
def plain_layout(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`predict_proba` as it was before channels_last: the same passes, plain layout."""
    step = inference_rows(x.shape[1:])
    out = [
        torch.softmax(model(to_float(x[i : i + step].to(device))).float(), 1).cpu()
        for i in range(0, len(x), step)
    ]
    return torch.cat(out)


def score(model: torch.nn.Module, x: torch.Tensor, device: torch.device, fast: bool) -> tuple:
    """(seconds, probabilities) of scoring `x`: the product's `predict_proba` (fast) or
    the plain layout, in passes of `inference_rows` images."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    probs = predict_proba(model, x, device) if fast else plain_layout(model, x, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, probs


def measure(shape: tuple[int, ...], n: int, network: str, device: torch.device, repeats: int):
    c, h, _ = shape
    config = ClassifierConfig(network, 10, c, h, (0.5,) * c, (0.25,) * c)
    torch.manual_seed(0)
    model = build_classifier(config).to(device).eval()
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator())
    score(model, x[: inference_rows(shape)], device, True)  # warm-up, both layouts
    score(model, x[: inference_rows(shape)], device, False)
    runs: dict[bool, list[float]] = {False: [], True: []}
    probs = {}
    for _ in range(repeats):
        for fast in (False, True):
            seconds, probs[fast] = score(model, x, device, fast)
            runs[fast].append(n / seconds)
    diff = (probs[True] - probs[False]).abs().max().item()
    return runs, diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--network", default="small_cnn")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    began = datetime.now(UTC)
    given = sys.argv[1:] if argv is None else argv
    extra = f" {shlex.join(given)}" if given else ""
    lines = [
        f"Command: `python -m bench.inference{extra}`",
        "",
        f"Machine: {machine_line(torch=torch.__version__)}; {torch.get_num_threads()} "
        f"threads. CPU check: 2 concurrent CPU-bound processes ran at {cpu_scaling():.2f}x "
        f"solo speed each; at start: {load_now()}.",
        "",
        f"{args.network}, {args.images:,} random uint8 images a run, on {device.type}; "
        "images/s, best of the runs (all runs in brackets):",
        "",
        "| image | plain layout | channels_last (default) | ratio | max abs diff of "
        "probabilities |",
        "|---|---:|---:|---:|---:|",
    ]
    for shape in SHAPES:
        runs, diff = measure(shape, args.images, args.network, device, args.repeats)
        plain, fast = max(runs[False]), max(runs[True])
        lines.append(
            f"| {'x'.join(map(str, shape))} | {plain:,.0f} "
            f"({', '.join(f'{r:,.0f}' for r in runs[False])}) | {fast:,.0f} "
            f"({', '.join(f'{r:,.0f}' for r in runs[True])}) | x{fast / plain:.2f} | "
            f"{diff:.1e} |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"Run {began:%Y-%m-%d %H:%M} UTC; at the end: {load_now()}."]
    print("\n".join(lines))
    if not args.no_write:
        update_results(SECTION, lines, notes=NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
