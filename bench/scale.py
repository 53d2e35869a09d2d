"""Scale: peak memory and wall time of ingest, weak labeling and one epoch of training
data loading at growing pool sizes, on synthetic 64x64 RGB images.

    .venv/bin/python -m bench.scale --sizes 100000 1000000
    .venv/bin/python -m bench.scale --sizes 20000 100000 --no-results   # a quick look

Each size gets its own image folder (generated once under bench/out/scale/, 1% of the
images in class folders as human labels, the rest unlabeled; a coloured square whose
colour and place depend on the class, on per-image noise) and its own store. Every stage
runs in a fresh process, so its peak RSS (VmHWM: the process's own peak, imports
included) is that stage's alone; the largest child process (ingest's decoding workers)
is reported beside it.

- ingest: `tasks.ingest.ingest_records` over the folder, default runner (processes) and
  a local Dask cluster (`ingest.runner: dask`, into a store of its own).
- weak labeling: two `kind: python` labeling functions over every stored row, the label
  model, label events written (`tasks.weak_labeling.weak_label_store`), default runner
  (processes) and a local Dask cluster (`runner: dask`).
- epoch: `load_training_data` (builds the decoded cache on first use) and then every
  unlabeled image read once in random batches of 224, as the student phase draws them,
  with `train.pool_memory_mb: 256` so that the large pools are read from the cache file.
- champion (set-up, not judged): every gold example gets a human label (its class, from
  the file name, as a person answering the gold stream would), a supervised teacher is
  trained for `CHAMPION_STEPS` steps on the labels and registered and promoted in MLflow:
  the model the next stages score with, as a user's champion would be.
- sample_margin: `sample_for_annotation`, the train stream by `margin` plus the review
  stream (confident learning on the labeled examples) and the gold stream, scored by
  the champion; sample_kcenter: the train stream by `kcenter` alone.
- gold: the gate's evaluation, `evaluate_candidate_and_champion` (the champion as the
  candidate: both models over the whole gold test part, metrics and bootstrap bounds).
- slis: label health as the monitor flow measures it (`measure_monitor`, `label_health`:
  the SLIs from the label log) and the drift checks on the champion's embeddings.
- monitor: `monitor_champion`, the champion on current gold against its gate baseline.
Target (issues 14 and 28): from the smallest to the largest size, peak memory within
+20% and time within 12x for 10x the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from bench.common import machine_line, update_results, verdict

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "scale"
SIZE = 64
LABELED_SHARE = 0.01
CHAMPION_STEPS = 100  # a teacher good enough to score with; its quality is not measured
SAMPLE_BUDGET = {"train": 200, "gold": 50, "review": 200}
SET_UP = ("champion",)  # measured and shown, not judged: it makes the model the rest use
SECTION_28 = "## Scale: sampling, gold, label health and monitor, 100k to 1M (issue 28)"
STAGE_OVERRIDES = {
    "sample_margin": {"sampling.strategy": "margin"},
    "sample_kcenter": {
        "sampling.strategy": "kcenter",
        "sampling.budget.gold": 0,
        "sampling.budget.review": 0,
    },
}
STAGES = (
    "ingest",
    "weak_label",
    "epoch",
    "champion",
    "sample_margin",
    "sample_kcenter",
    "gold",
    "slis",
    "monitor",
)
SECTION = "## Scale: memory and time as the pool grows (issue 14)"


# -- synthetic images ------------------------------------------------------------------


def _write_images(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    folder, start, stop, n_labeled = args
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        k = i % 10
        img = rng.integers(0, 40, size=(SIZE, SIZE, 3), dtype=np.uint8)
        r, c = 4 + (k // 5) * 28 + rng.integers(0, 6), 4 + (k % 5) * 11 + rng.integers(0, 3)
        img[r : r + 20, c : c + 10] = ((37 * k) % 256, (91 * k) % 256, (53 * k + 100) % 256)
        sub = str(k) if i < n_labeled else "unlabeled"
        Image.fromarray(img).save(folder / sub / f"{i:07d}.png", compress_level=1)


def images_folder(n: int) -> Path:
    """bench/out/scale/images-<n>, generated once (two processes)."""
    folder = OUT / f"images-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    for sub in [*map(str, range(10)), "unlabeled"]:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    n_labeled = int(n * LABELED_SHARE)
    step = 5000
    jobs = [(folder, s, min(s + step, n), n_labeled) for s in range(0, n, step)]
    t = time.perf_counter()
    with Pool(len(os.sched_getaffinity(0))) as pool:
        for i, _ in enumerate(pool.imap_unordered(_write_images, jobs), 1):
            print(f"\r  generating {n:,} images: {i * step:,}", end="", flush=True)
    print(f"\r  generated {n:,} images in {time.perf_counter() - t:.0f}s          ")
    done.touch()
    return folder


# -- one stage, in its own process -----------------------------------------------------


def overrides(n: int, home: Path, runner: str = "processes") -> dict:
    return {
        "store.root": str(home / "store"),
        "source.kind": "image_folder",
        "source.path": str(images_folder(n)),
        "ingest.channels": [3],
        "ingest.workers": 2,
        "train.image_size": SIZE,
        "train.channels": 3,
        "train.pool_memory_mb": 256,
        "train.run_dir": str(home / "runs"),
        "mlflow.tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
        "ingest.runner": runner,
        "weak_labeling.runner": runner,
        "weak_labeling.workers": 2,
        "sampling.budget.train": SAMPLE_BUDGET["train"],
        "sampling.budget.gold": SAMPLE_BUDGET["gold"],
        "sampling.budget.review": SAMPLE_BUDGET["review"],
        "weak_labeling.functions": [
            {"name": "bright_red", "kind": "python", "target": "bench.scale:red_square"},
            {"name": "blue_square", "kind": "python", "target": "bench.scale:blue_square"},
        ],
    }


def class_of(source_uri: str) -> str:
    """The synthetic image's class: its number modulo 10 (see `_write_images`)."""
    return str(int(Path(source_uri).stem) % 10)


# Class k's square is coloured ((37k) % 256, (91k) % 256, (53k + 100) % 256) on a dark
# background (`_write_images`): class 6's is the only red one (222, 34, 162), class 7's
# the only blue one with little red (3, 125, 215). (Until 2026-12-04 these two functions
# said 7 for the red square and 9 for a blue that no class has: the product quarantined
# the first at 1M, where enough gold rows showed it wrong, and the second never voted.)


def red_square(batch) -> np.ndarray:  # a labeling function: class 6's square is red
    x = batch.images
    red = (x[:, 0] > 200) & (x[:, 1] < 100)
    return np.where(red.reshape(len(x), -1).mean(1) > 0.03, 6, -1).astype(np.int16)


def blue_square(batch) -> np.ndarray:  # class 7's square is blue, with hardly any red
    x = batch.images
    blue = (x[:, 2] > 200) & (x[:, 0] < 50)
    return np.where(blue.reshape(len(x), -1).mean(1) > 0.03, 7, -1).astype(np.int16)


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_stage(stage: str, n: int, home: Path, runner: str) -> dict:
    from configs.schema import load_config

    cfg = load_config(overrides={**overrides(n, home, runner), **STAGE_OVERRIDES.get(stage, {})})
    t = time.perf_counter()
    if stage == "ingest":
        from tasks.ingest import image_folder_records, ingest_records
        from tasks.store import Store

        total, records = image_folder_records(cfg.source.path)
        summary = ingest_records(
            Store(cfg.store.root),
            records,
            cfg.data_spec(),
            cfg.ingest,
            source_name="scale",
            run_id=f"s{n}",
            total=total,
        )
        detail = f"{summary.ingested:,} new, {summary.duplicates:,} duplicates"
    elif stage == "weak_label":
        from prefect import flow

        from flows.weak_label import weak_label_inputs
        from tasks.weak_labeling.run import weak_label_store

        @flow(name="bench-scale-weak-label")
        def wl() -> object:
            return weak_label_store(weak_label_inputs(cfg), f"wl-{runner}-{n}")

        summary = wl()
        detail = f"{summary.n_rows:,} rows"  # type: ignore[attr-defined]
    elif stage == "epoch":
        import torch

        from models.pool import take_rows
        from tasks.store import Store
        from tasks.training import load_training_data

        training = load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)
        loaded = time.perf_counter() - t
        pool = training.data.x_ulb
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
        checksum = 0
        for i in range(0, len(order), 224):
            checksum += int(take_rows(pool, order[i : i + 224]).float().mean() > 0)
        detail = f"{len(pool):,} unlabeled read ({type(pool).__name__}), load {loaded:.0f}s"
    else:
        detail = _later_stage(stage, cfg, runner)
    return {
        "stage": stage,
        "runner": runner,
        "n": n,
        "wall_s": time.perf_counter() - t,
        "peak_mib": _peak_kib() / 1024,
        "children_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "detail": detail,
    }


def _later_stage(stage: str, cfg, runner: str) -> str:
    """The stages after training data exists: the champion, sampling, gold, SLIs, monitor."""
    from tasks.registry.aliases import RegistryRef, champion_version
    from tasks.store import Store
    from tasks.validation.gold import GoldSpec

    store = Store(cfg.store.root)
    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    spec = GoldSpec.from_data(cfg.data_spec())
    if stage == "champion":
        return _make_champion(cfg, store, ref)
    version = champion_version(ref)
    if version is None:
        raise SystemExit("bench.scale: no champion: run the champion stage first")
    if stage.startswith("sample_"):
        from flows.sample import sampling_inputs
        from tasks.sampling.run import sample_for_annotation

        result = sample_for_annotation(store, sampling_inputs(cfg), f"bench-{stage}")
        asked = ", ".join(f"{v} {k}" for k, v in result.requested().items())
        return f"{asked} (of {result.candidates}); scored by {result.model_version}"
    if stage == "gold":
        from tasks.registry.promotion.evaluation import evaluate_candidate_and_champion
        from tasks.validation import GatePolicy
        from tasks.validation.gate import decide

        ev = evaluate_candidate_and_champion(
            store, spec, ref, ref.version_uri(version), trust_pickle=False
        )
        policy = GatePolicy.from_config(cfg.gate, cfg.seed)
        report = decide(ev.evidence(), policy, ev.champion_version, ev.gold.sizes)
        return (
            f"{len(ev.candidate_probs):,} gold test, accuracy {ev.candidate.accuracy:.4f}; "
            f"gate {report.decision}"
        )
    if stage == "slis":
        from flows.monitor import label_health_inputs
        from tasks.slis.drift_check import check_drift
        from tasks.slis.measure import load_model, measure_monitor
        from tasks.slis.record import label_health

        inputs = label_health_inputs(cfg)
        health = label_health(store, inputs, measure_monitor(inputs, "bench"), "bench")
        model = load_model(ref.version_uri(version), inputs.mlflow)
        checks, _ = check_drift(store, inputs.data, inputs.health.drift, inputs.labels, model)
        return f"{len(health.slis)} SLIs, {len(checks)} drift checks"
    if stage == "monitor":
        from tasks.registry.monitoring import monitor_champion

        report = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)
        return f"{report.action}: {report.detail}"[:120]
    raise SystemExit(f"bench.scale: unknown stage {stage!r}")


def _make_champion(cfg, store, ref) -> str:
    """Human labels on every gold example, then a teacher trained, registered, promoted."""
    import dataclasses
    from datetime import UTC, datetime

    import mlflow
    import pyarrow as pa

    from models import fit
    from tasks.registry.aliases import promote, register_candidate
    from tasks.registry.model_format import log_classifier
    from tasks.store import EXAMPLES, LABELS, SCHEMAS, GoldSplit
    from tasks.store.labels import label_event_id
    from tasks.training import load_training_data

    g = cfg.gold
    split = GoldSplit(g.fraction, g.salt, g.test_share)
    now = datetime.now(UTC)
    n_gold = 0
    for rb in store.iter_batches(EXAMPLES, ["example_id", "source_uri"], batch_size=65536):
        gold = split.is_gold(rb.column(0))
        ids = [e for e, keep in zip(rb.column(0).to_pylist(), gold, strict=True) if keep]
        uris = [u for u, keep in zip(rb.column(1).to_pylist(), gold, strict=True) if keep]
        labels = [class_of(u) for u in uris]
        rows = {
            "event_id": [
                label_event_id(e, c, "human", "bench-gold", act="bench")
                for e, c in zip(ids, labels, strict=True)
            ],
            "example_id": ids,
            "label": labels,
            "source_kind": ["human"] * len(ids),
            "source_name": ["bench-gold"] * len(ids),
            "confidence": [1.0] * len(ids),
            "created_at": [now] * len(ids),
            "run_id": ["bench-gold"] * len(ids),
            "taxonomy_version": ["v1"] * len(ids),
            "model_influenced": [False] * len(ids),
        }
        if ids:
            store.write(LABELS, pa.Table.from_pydict(rows, schema=SCHEMAS[LABELS]))
        n_gold += len(ids)
    training = load_training_data(store, cfg.data_spec(), cfg.train, cfg.labels)
    settings = dataclasses.replace(
        cfg.train_settings(), teacher_steps=CHAMPION_STEPS, student_steps=0, checkpoint_every=0
    )
    result = fit(dataclasses.replace(training.data, x_eval=None, y_eval=None), settings)
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment("bench-scale")
    with mlflow.start_run() as run:
        uri = log_classifier(result.teacher, cfg.data_spec().classes, training.data.x_lb[:1])
    version = register_candidate(ref, uri, run.info.run_id, {})
    promote(ref, version, expected_champion=None)
    return f"{n_gold:,} gold labels written; champion v{version} ({training.n_human:,} labels)"


def measure(stage: str, n: int, runner: str = "processes") -> dict:
    home = OUT / f"home-{n}" if (stage, runner) != ("ingest", "dask") else OUT / f"dask-{n}"
    home.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.scale", "--stage", stage, "--n", str(n), "--runner", runner]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench.scale: {stage} at {n:,} failed:\n{proc.stderr[-4000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  {stage:<10} {runner:<9} {n:>9,}: {row['wall_s']:7.1f}s  peak {row['peak_mib']:7.0f} MiB"
        f"  (largest child {row['children_peak_mib']:.0f} MiB)  {row['detail']}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--no-dask", action="store_true", help="skip the Dask weak-labeling runs")
    p.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="stages to run, in order (a later stage needs the store the earlier ones make)",
    )
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--runner", default="processes", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage:
        dask_ingest = (args.stage, args.runner) == ("ingest", "dask")
        home = OUT / (f"dask-{args.n}" if dask_ingest else f"home-{args.n}")
        print(json.dumps(run_stage(args.stage, args.n, home, args.runner)))
        return 0
    sizes = sorted(args.sizes)
    rows = []
    for n in sizes:
        print(f"{n:,} images")
        images_folder(n)
        import shutil

        if "ingest" in args.stages:  # fresh stores per size (else: the stores made before)
            for home in (f"home-{n}", f"dask-{n}"):
                shutil.rmtree(OUT / home, ignore_errors=True)
        for stage in args.stages:
            if stage in ("ingest", "weak_label") and not args.no_dask:
                rows.append(measure(stage, n))  # then the same in a store of its own
                rows.append(measure(stage, n, "dask"))
            else:
                rows.append(measure(stage, n))
    lo, hi = sizes[0], sizes[-1]
    lines = [
        f"Command: `.venv/bin/python -m bench.scale --sizes {' '.join(map(str, sizes))}"
        + (f" --stages {' '.join(args.stages)}`" if args.stages != list(STAGES) else "`"),
        "",
        f"Machine: {machine_line()}. Synthetic {SIZE}x{SIZE} RGB PNGs, 1% labeled; each "
        "stage in a fresh process (peak = its VmHWM, imports included).",
        "",
        "| stage | runner | images | wall s | peak MiB | largest child MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['stage']} | {r['runner']} | {r['n']:,} | {r['wall_s']:.1f} | {r['peak_mib']:.0f} "
        f"| {r['children_peak_mib']:.0f} |"
        for r in rows
    ]
    lines += ["", f"From {lo:,} to {hi:,} images ({hi / lo:.0f}x):", ""]
    judged = sorted({(r["stage"], r["runner"]) for r in rows if r["stage"] not in SET_UP})
    for stage, runner in judged:
        a = next(r for r in rows if (r["stage"], r["runner"], r["n"]) == (stage, runner, lo))
        b = next(r for r in rows if (r["stage"], r["runner"], r["n"]) == (stage, runner, hi))
        mem = b["peak_mib"] / a["peak_mib"]
        tim = b["wall_s"] / a["wall_s"]
        ok = mem <= 1.2 and tim <= 1.2 * hi / lo  # memory may not grow by more than 20%
        lines.append(
            f"- {stage} ({runner}): peak memory x{mem:.2f}, time x{tim:.1f} "
            f"(target: memory grows at most 20%, time within {1.2 * hi / lo:.0f}x): "
            f"{verdict(ok)}"
        )
        print(lines[-1])
    if not args.no_results:
        later = set(args.stages) - {"ingest", "weak_label", "epoch"}
        update_results(SECTION_28 if later else SECTION, lines, notes="### Notes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
