"""What every benchmark shares: machine facts, how busy the machine was, and writing its
section of bench/RESULTS.md (keeping a hand-written notes subsection)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"

_SPIN = (
    "import time\nt = time.perf_counter()\nx = 0\n"
    "for i in range(4_000_000):\n    x += i\nprint(time.perf_counter() - t)"
)


def cpu_scaling() -> float:
    """Speed of each of 2 concurrent CPU-bound processes relative to one alone (1.0 = two
    free cores, 0.5 = effectively one). The hosts this runs on are often shared."""

    def spin(n: int) -> float:
        procs = [
            subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        return max(float(p.communicate()[0]) for p in procs)

    solo = min(spin(1) for _ in range(2))
    pair = min(spin(2) for _ in range(2))
    return solo / pair


def load_now() -> str:
    """1-minute load average and CPU pressure (share of time something waited for a CPU)."""
    out = "load 1m " + Path("/proc/loadavg").read_text().split()[0]
    try:
        some = Path("/proc/pressure/cpu").read_text().split()[1]  # "avg10=12.34"
        out += f", cpu pressure {some.split('=')[1]}% (10s)"
    except (OSError, IndexError):
        pass
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine_line(**versions: str) -> str:
    """'2 CPUs (model), Python x, Linux y; pkg a, pkg b' for the report header."""
    out = (
        f"{len(os.sched_getaffinity(0))} CPUs ({cpu_model()}), Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    if versions:
        out += "; " + ", ".join(f"{k} {v}" for k, v in versions.items())
    return out


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def update_results(section: str, md_lines: list[str], notes: str | None = None) -> None:
    """Replace `section` ("## ...") of RESULTS.md with `md_lines` (append it when absent).
    A subsection headed `notes` ("### ...") inside the old section is kept, after the
    generated part: hand-written explanations survive a re-run."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == section), None)
    kept = ""
    end = len(lines)
    if start is not None:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        old = lines[start:end]
        at = next((i for i, ln in enumerate(old) if notes and ln.rstrip() == notes), None)
        kept = "".join(old[at:]).rstrip() + "\n" if at is not None else ""
    body = "\n".join([section, "", *md_lines]).rstrip() + "\n"
    body += "\n" + kept if kept else ""
    if start is None:
        text = text.rstrip() + "\n\n" + body
    else:
        after = "".join(lines[end:])
        text = "".join(lines[:start]) + body + ("\n" + after if after else "")
    RESULTS_MD.write_text(text)
