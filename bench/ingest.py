"""Ingest benchmark: our ingest path next to a raw pyarrow write of the same bytes.

    python -m bench.ingest                       # the defaults: what `make bench` runs
    python -m bench.ingest --rows 50000 --rss-rows 10000,100000 --out bench/out

What it measures, in one run:

* **throughput** — `--rows` synthetic 28x28 grayscale PNGs in an image_folder layout
  (class folders "0".."9" for a labeled share, "unlabeled/" for the rest) ingested
  through the real code path (`image_folder_records` + `ingest_records` into a fresh
  `Store`), end to end: listing and reading the files, checking in worker processes,
  dedup, writing. Next to it, the floor any ingester pays: list the same folder, read
  the same files' bytes and write them with `pq.write_table` as a one-column binary
  table, zstd, one file per `store.rows_per_file` rows (the layout ingest writes). The
  page cache is warmed by reading every file once first, the two alternate, and each
  one's best of `--repeats` runs counts. Target: ours within 2x of raw.
* **peak RSS** — ingest of each `--rss-rows` size in a fresh subprocess
  (`--rss-child N`). The main process's peak is reset once the imports are done, so
  it is the ingest's own; the workers' peaks are polled from /proc. Both are the
  kernel's VmHWM, because on Linux `getrusage().ru_maxrss` of a process started from
  a bigger one begins at that parent's peak (it is printed too, for reference; see
  `ChildPeaks`). Target: the main process's peak at the largest size within +-20% of
  the smallest, i.e. ingest streams.

Images are generated once (deterministic per `--seed`, every one unique so dedup keeps
them all) and cached under `--out` (gitignored); smaller sets are hard links to a prefix
of the largest. The figures are printed and written to the "## Ingest (bench/ingest)"
section of bench/RESULTS.md.
"""

from __future__ import annotations

# Only the standard library at module level: ingest's spawned workers re-import the main
# module (this one, under `python -m bench.ingest`), and a heavy import here would be
# charged to "ours" (bench.common is standard library only too). pyarrow, Pillow and the
# project are imported where they are used.
import argparse
import cProfile
import hashlib
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    BENCH_DIR,
    RESULTS_MD,
    cpu_model,
    cpu_scaling,
    load_now,
    update_results,
    verdict,
)

REPO_ROOT = BENCH_DIR.parent
SECTION = "## Ingest (bench/ingest)"
COMPLETE = ".complete"  # marker file; hidden, so image_folder_records skips it
LABELED_EVERY = 5  # every 5th image sits in a class folder (20% labeled), the rest unlabeled
TARGET_RATIO = 2.0
TARGET_RSS = 0.20


# -- synthetic data ---------------------------------------------------------------------


def synth_png(index: int, seed: int, attempt: int = 0) -> bytes:
    """A digit-like 28x28 grayscale PNG: 1-3 thick strokes (lines and arcs) drawn at 4x
    and box-downsampled, so edges are gray like MNIST's. Deterministic per arguments."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"{seed}:{index}:{attempt}")
    s = 4
    img = Image.new("L", (28 * s, 28 * s), 0)
    draw = ImageDraw.Draw(img)
    width = rng.randint(2, 4) * s
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.4:
            cx, cy = rng.uniform(9, 19) * s, rng.uniform(8, 20) * s
            rx, ry = rng.uniform(3, 7) * s, rng.uniform(4, 9) * s
            a = rng.uniform(0, 360)
            draw.arc(
                (cx - rx, cy - ry, cx + rx, cy + ry),
                a,
                a + rng.uniform(120, 360),
                fill=255,
                width=width,
            )
        else:
            pts = [
                (rng.uniform(6, 22) * s, rng.uniform(4, 24) * s) for _ in range(rng.randint(2, 4))
            ]
            draw.line(pts, fill=255, width=width, joint="curve")
    img = img.resize((28, 28), Image.Resampling.BOX)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _synth_range(args: tuple[int, int, int]) -> list[bytes]:
    start, stop, seed = args
    return [synth_png(i, seed) for i in range(start, stop)]


def rel_path(index: int) -> str:
    """Where image `index` lives in the image_folder layout."""
    folder = str((index // LABELED_EVERY) % 10) if index % LABELED_EVERY == 0 else "unlabeled"
    return f"{folder}/{index:07d}.png"


def _is_complete(folder: Path, rows: int) -> bool:
    marker = folder / COMPLETE
    return marker.is_file() and marker.read_text().strip() == str(rows)


def _cached_sets(data_dir: Path, seed: int) -> dict[int, Path]:
    """Complete image sets already on disk, by size."""
    found: dict[int, Path] = {}
    for d in data_dir.glob(f"n*-s{seed}") if data_dir.is_dir() else []:
        n = d.name.split("-", 1)[0][1:]
        if n.isdigit() and _is_complete(d, int(n)):
            found[int(n)] = d
    return found


def ensure_pool(data_dir: Path, rows: int, seed: int) -> tuple[Path, int]:
    """A set of at least `rows` images: the smallest cached one, or a new one generated
    (in parallel) and cached. Images depend only on (seed, index), so any bigger set's
    first `rows` images are the same `rows` images. Returns (folder, its size)."""
    bigger = {n: d for n, d in _cached_sets(data_dir, seed).items() if n >= rows}
    if bigger:
        n = min(bigger)
        return bigger[n], n
    pool = data_dir / f"n{rows}-s{seed}"
    if pool.exists():
        shutil.rmtree(pool)
    tmp = data_dir / f".tmp-n{rows}-s{seed}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for d in [*(str(c) for c in range(10)), "unlabeled"]:
        (tmp / d).mkdir(parents=True)
    print(f"generating {rows:,} synthetic PNGs into {pool} (once) ...", flush=True)
    t0 = time.perf_counter()
    step = 2000
    seen: set[bytes] = set()
    jobs = [(i, min(i + step, rows), seed) for i in range(0, rows, step)]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as procs:
        for (start, _, _), blobs in zip(jobs, procs.imap(_synth_range, jobs), strict=True):
            for i, data in enumerate(blobs, start):
                attempt = 0
                while (digest := hashlib.sha256(data).digest()) in seen:
                    attempt += 1  # keep every image unique, so dedup collapses nothing
                    data = synth_png(i, seed, attempt)
                seen.add(digest)
                (tmp / rel_path(i)).write_bytes(data)
    (tmp / COMPLETE).write_text(str(rows))
    tmp.rename(pool)
    print(f"  done in {time.perf_counter() - t0:.1f}s", flush=True)
    return pool, rows


def ensure_dataset(data_dir: Path, rows: int, seed: int, pool: Path, pool_rows: int) -> Path:
    """A folder holding exactly images 0..rows-1: hard links into the pool."""
    if rows == pool_rows:
        return pool
    if rows > pool_rows:
        raise ValueError(f"{rows} rows asked from a pool of {pool_rows}")
    folder = data_dir / f"n{rows}-s{seed}"
    if _is_complete(folder, rows):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    tmp = data_dir / f".tmp-n{rows}-s{seed}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for d in [*(str(c) for c in range(10)), "unlabeled"]:
        (tmp / d).mkdir(parents=True)
    for i in range(rows):
        src, dst = pool / rel_path(i), tmp / rel_path(i)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    (tmp / COMPLETE).write_text(str(rows))
    tmp.rename(folder)
    return folder


def walk_files(root: Path) -> Iterator[Path]:
    """Visible files under `root` in image_folder_records' order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                yield Path(dirpath) / f


# -- the two contenders -------------------------------------------------------------------


def rows_per_file() -> int:
    from configs.schema import load_config

    return load_config().store.rows_per_file


def run_raw(folder: Path, out_dir: Path, per_file: int) -> tuple[float, int, int]:
    """List, read and write as zstd Parquet, `per_file` rows a file. (seconds, rows, bytes)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    files = list(walk_files(folder))
    n_bytes = 0
    for part, start in enumerate(range(0, len(files), per_file)):
        blobs = [p.read_bytes() for p in files[start : start + per_file]]
        n_bytes += sum(map(len, blobs))
        table = pa.table({"image": pa.array(blobs, pa.binary())})
        pq.write_table(table, out_dir / f"part-{part:06d}.parquet", compression="zstd")
    return time.perf_counter() - t0, len(files), n_bytes


def run_ours(folder: Path, store_dir: Path, workers: int) -> tuple[float, object]:
    """The real path: config -> image_folder_records -> ingest_records -> Store."""
    from configs.schema import load_config
    from tasks.ingest import image_folder_records, ingest_records
    from tasks.store import Store

    cfg = load_config(
        overrides={
            "source.kind": "image_folder",
            "source.path": str(folder),
            "store.root": str(store_dir),
            "ingest.workers": workers,
        }
    )
    t0 = time.perf_counter()
    total, records = image_folder_records(cfg.source.path or "")
    summary = ingest_records(
        Store(cfg.store.root),
        records,
        cfg.data_spec(),
        cfg.ingest,
        source_name=f"image_folder:{folder.name}",
        run_id="bench",
        total=total,
    )
    return time.perf_counter() - t0, summary


def _check_summary(summary: object, rows: int) -> None:
    ingested = getattr(summary, "ingested", None)
    quarantined = getattr(summary, "quarantined_total", None)
    if ingested != rows or quarantined:
        raise SystemExit(
            f"ingest did not take every image: ingested={ingested}, quarantined={quarantined}, "
            f"expected {rows}; the benchmark figures would be meaningless"
        )


# -- peak RSS (child process) -------------------------------------------------------------


def _status_kib(pid: int | str, key: str) -> int:
    """A `VmRSS:`/`VmHWM:` figure of /proc/<pid>/status, in KiB (0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ChildPeaks(threading.Thread):
    """Polls the peak RSS (VmHWM) of this process's children, i.e. the ingest workers.

    `getrusage(RUSAGE_CHILDREN)` cannot be trusted for them on Linux: a child's
    ru_maxrss starts at its parent's peak at fork time (the kernel carries the forked
    memory map's high-water mark across exec), so it reports max(parent, child). VmHWM
    of the child's own post-exec memory does not. VmHWM only grows, so polling every
    0.1 s loses nothing but the last 0.1 s of a worker's life.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self._stop_event = threading.Event()
        self._me = str(os.getpid())

    def _sample(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[1] != self._me:  # field 4: ppid
                continue
            hwm = _status_kib(name, "VmHWM:")
            self.peaks[int(name)] = max(self.peaks.get(int(name), 0), hwm)

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            self._sample()

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peaks.values(), default=0)


def rss_child(folder: Path, rows: int, workers: int, tmp_root: Path) -> dict:
    """Runs in a fresh process: one ingest, then the peak RSS of it and of its workers.

    The main process's peak is VmHWM, reset (Linux >= 4.0: /proc/self/clear_refs) once
    the imports are done, so it is the ingest's own peak and not the transient peak of
    importing prefect & co. (ru_maxrss is reported too, but on Linux it also carries the
    parent's peak at fork time; see `ChildPeaks`.)
    """
    import configs.schema  # noqa: F401 - imported before the ingest starts, like a real run
    import tasks.ingest  # noqa: F401
    import tasks.store  # noqa: F401

    imports_peak_kib = _status_kib("self", "VmHWM:")
    start_kib = _status_kib("self", "VmRSS:")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    poller = ChildPeaks()
    poller.start()
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="rss-store-") as store_dir:
        elapsed, summary = run_ours(folder, Path(store_dir), workers)
    worker_peak_kib = poller.stop()
    _check_summary(summary, rows)
    ingest_peak_kib = _status_kib("self", "VmHWM:")
    return {
        "rows": rows,
        "seconds": elapsed,
        "peak_reset": reset,
        "main_imports_peak_kib": imports_peak_kib,  # VmHWM up to the ingest start
        "main_start_kib": start_kib,  # VmRSS at the ingest start
        "main_ingest_peak_kib": ingest_peak_kib,  # VmHWM during the ingest
        "main_peak_kib": max(imports_peak_kib, ingest_peak_kib),  # whole process
        "worker_peak_kib": worker_peak_kib,  # largest worker VmHWM
        "ru_maxrss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ru_maxrss_children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def measure_rss(rows: int, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.ingest",
        "--rss-child",
        str(rows),
        "--out",
        str(args.out),
        "--seed",
        str(args.seed),
        "--workers",
        str(args.workers),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"RSS child for {rows} rows failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- reporting ------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    import numpy
    import PIL
    import pyarrow as pa

    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
    }


@dataclass
class Timing:
    name: str
    runs: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.runs)


def _mib(kib: int) -> float:
    return kib / 1024


@dataclass
class Report:
    args: argparse.Namespace
    facts: dict[str, str]
    scaling: float
    load_start: str
    load_end: str
    per_file: int
    n_bytes: int
    raw: Timing
    ours: Timing
    rss: list[dict]


def build_report(r: Report) -> tuple[list[str], list[str]]:
    """(lines for the terminal, lines for RESULTS.md)."""
    args, facts = r.args, r.facts
    term: list[str] = []
    md: list[str] = []
    machine = (
        f"{facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, {facts['os']}; "
        f"Python {facts['python']}, pyarrow {facts['pyarrow']}, Pillow {facts['pillow']}, "
        f"numpy {facts['numpy']}"
    )
    busy = (
        f"2 concurrent CPU-bound processes ran at {r.scaling:.2f}x solo speed each; "
        f"{r.load_start} at start, {r.load_end} at end"
    )
    term += [f"machine: {machine}", f"         {busy}"]
    md += [f"Machine: {machine}. During the run: {busy}.", ""]

    avg = r.n_bytes / args.rows
    head = (
        f"throughput: {args.rows:,} synthetic 28x28 grayscale PNGs "
        f"({r.n_bytes / 1e6:.2f} MB, {avg:.0f} B avg, 20% in class folders), "
        f"ingest.workers={args.workers}, best of {args.repeats}, page cache warm"
    )
    term += ["", head]
    md += [head + ".", ""]
    term.append(f"  {'':42} {'best s':>7} {'rows/s':>9} {'MB/s':>6}   all runs (s)")
    md += ["| | best s | rows/s | MB/s | all runs (s) |", "|---|---:|---:|---:|---|"]
    labels = {
        "raw": f"raw: list+read+pq.write ({r.per_file:,} rows/file)",
        "ours": "ours: image_folder_records+ingest",
    }
    for t in (r.raw, r.ours):
        rps = args.rows / t.best
        mbs = r.n_bytes / 1e6 / t.best
        runs = ", ".join(f"{x:.2f}" for x in t.runs)
        term.append(f"  {labels[t.name]:42} {t.best:7.2f} {rps:9,.0f} {mbs:6.2f}   {runs}")
        md.append(f"| {labels[t.name]} | {t.best:.2f} | {rps:,.0f} | {mbs:.2f} | {runs} |")
    ratio = r.ours.best / r.raw.best
    line = (
        f"ours / raw time: {ratio:.2f}x  (target <= {TARGET_RATIO:.0f}x: "
        f"{verdict(ratio <= TARGET_RATIO)})"
    )
    term.append("  " + line)
    md += ["", f"**{line}**", ""]

    if r.rss:
        head = (
            f"peak RSS (MiB): one ingest per fresh process, ingest.workers={args.workers}; "
            "the main process's peak is reset when the ingest starts (after imports)"
        )
        term += ["", head]
        md += [head + ".", ""]
        term.append(
            f"  {'rows':>9} {'ingest peak':>11} {'at start':>9} {'growth':>7} "
            f"{'imports peak':>12} {'max worker':>10} {'ru_maxrss self/children':>23} "
            f"{'seconds':>8}"
        )
        md += [
            "| rows | main: ingest peak | main: RSS at start | growth | main: imports peak "
            "| max worker peak | ru_maxrss self / children | s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in r.rss:
            peak, start = _mib(x["main_ingest_peak_kib"]), _mib(x["main_start_kib"])
            imports, worker = _mib(x["main_imports_peak_kib"]), _mib(x["worker_peak_kib"])
            ru = f"{_mib(x['ru_maxrss_self_kib']):.1f} / {_mib(x['ru_maxrss_children_kib']):.1f}"
            term.append(
                f"  {x['rows']:>9,} {peak:11.1f} {start:9.1f} {peak - start:7.1f} "
                f"{imports:12.1f} {worker:10.1f} {ru:>23} {x['seconds']:8.2f}"
            )
            md.append(
                f"| {x['rows']:,} | {peak:.1f} | {start:.1f} | {peak - start:.1f} | "
                f"{imports:.1f} | {worker:.1f} | {ru} | {x['seconds']:.2f} |"
            )
        note = (
            "main peaks are VmHWM (reset at the ingest start), worker peaks VmHWM polled every "
            "0.1 s; ru_maxrss is shown for reference only: on Linux a child's ru_maxrss starts "
            "at its parent's peak at fork time, so it overstates both"
        )
        term.append("  (" + note + ")")
        md += ["", f"({note}.)"]
        if len(r.rss) >= 2:
            lo, hi = r.rss[0], r.rss[-1]
            ratio = hi["main_ingest_peak_kib"] / lo["main_ingest_peak_kib"]
            whole = hi["main_peak_kib"] / lo["main_peak_kib"]
            g_lo = _mib(lo["main_ingest_peak_kib"] - lo["main_start_kib"])
            g_hi = _mib(hi["main_ingest_peak_kib"] - hi["main_start_kib"])
            w_ratio = hi["worker_peak_kib"] / max(lo["worker_peak_kib"], 1)
            line = (
                f"main ingest peak {hi['rows']:,} / {lo['rows']:,} rows: {ratio:.2f}x  "
                f"(target within +-{TARGET_RSS:.0%}: {verdict(abs(ratio - 1) <= TARGET_RSS)})"
            )
            extra = (
                f"growth {g_hi:.1f} vs {g_lo:.1f} MiB; whole-process peak {whole:.2f}x; "
                f"max worker peak {w_ratio:.2f}x"
            )
            if not all(x["peak_reset"] for x in r.rss):
                extra += "; peak could not be reset, so these include imports"
            term += ["  " + line, "  " + extra]
            md += ["", f"**{line}**; {extra}.", ""]

    command = shlex.join(["python", "-m", "bench.ingest", *sys.argv[1:]])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    while md and md[-1] == "":
        md.pop()
    md += ["", f"Command: `{command}` (run {when})."]
    return term, md


# -- main ----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=50_000, help="images for the throughput run")
    p.add_argument(
        "--rss-rows",
        type=_int_list,
        default=[10_000, 100_000],
        help="comma-separated sizes for the peak-RSS runs ('' skips them)",
    )
    p.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="cache and scratch folder")
    p.add_argument("--workers", type=int, default=2, help="ingest.workers")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each contender")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the timed runs, profile one more ingest (main process) with cProfile",
    )
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rows < 1 or args.repeats < 1 or args.workers < 1:
        p.error("--rows, --repeats and --workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    data_dir = args.out / "data"
    tmp_root = args.out / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    if args.rss_child is not None:
        folder = data_dir / f"n{args.rss_child}-s{args.seed}"
        if not _is_complete(folder, args.rss_child):
            raise SystemExit(f"{folder} is missing; run without --rss-child first")
        print(json.dumps(rss_child(folder, args.rss_child, args.workers, tmp_root)))
        return 0

    sizes = sorted({args.rows, *args.rss_rows})
    pool, pool_rows = ensure_pool(data_dir, sizes[-1], args.seed)
    folders = {n: ensure_dataset(data_dir, n, args.seed, pool, pool_rows) for n in sizes}
    folder = folders[args.rows]
    per_file = rows_per_file()

    load_start = load_now()
    scaling = cpu_scaling()
    print(f"machine check: {load_start}; 2-process CPU scaling {scaling:.2f}x", flush=True)
    if scaling < 0.8:
        print(
            "  warning: the CPUs are not free (another job?); timings will be pessimistic",
            flush=True,
        )

    # Warm the page cache for both contenders alike, and count the bytes.
    n_bytes = sum(len(p.read_bytes()) for p in walk_files(folder))

    raw, ours = Timing("raw"), Timing("ours")
    print(f"timing {args.rows:,} rows: raw and ours alternate, {args.repeats} runs each")
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=tmp_root, prefix="raw-") as d:
            seconds, rows, raw_bytes = run_raw(folder, Path(d), per_file)
        if rows != args.rows or raw_bytes != n_bytes:
            raise SystemExit(f"raw read {rows} files / {raw_bytes} B, expected {args.rows}")
        raw.runs.append(seconds)
        with tempfile.TemporaryDirectory(dir=tmp_root, prefix="ours-") as d:
            seconds, summary = run_ours(folder, Path(d), args.workers)
        _check_summary(summary, args.rows)
        ours.runs.append(seconds)
        print(f"  raw {raw.runs[-1]:.2f}s  ours {ours.runs[-1]:.2f}s", flush=True)

    if args.profile:
        prof_path = args.out / "ingest.prof"
        with tempfile.TemporaryDirectory(dir=tmp_root, prefix="prof-") as d:
            prof = cProfile.Profile()
            prof.enable()
            run_ours(folder, Path(d), args.workers)
            prof.disable()
        prof.dump_stats(prof_path)
        print(f"\ncProfile of one more ingest (main process only), saved to {prof_path}:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)

    rss: list[dict] = []
    for n in sorted(args.rss_rows):
        print(f"peak RSS: ingesting {n:,} rows in a fresh process ...", flush=True)
        rss.append(measure_rss(n, args))

    report = Report(
        args=args,
        facts=machine_facts(),
        scaling=scaling,
        load_start=load_start,
        load_end=load_now(),
        per_file=per_file,
        n_bytes=n_bytes,
        raw=raw,
        ours=ours,
        rss=rss,
    )
    term, md = build_report(report)
    print()
    print("\n".join(term))
    if not args.no_results:
        update_results(SECTION, md)
        print(f"\nwrote the '{SECTION}' section of {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
