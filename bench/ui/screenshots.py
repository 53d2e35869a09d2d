"""Screenshots of what a reviewer sees in the MLflow UI after two retrains, for the README
and docs/mlflow-ui.md
(optional, not run in CI: needs Debian's `chromium`).

    .venv/bin/python -m bench.ui.screenshots              # three retrains, then shots
    .venv/bin/python -m bench.ui.screenshots --reuse      # shots of the runs already there

Three retrains on the embedded default, as a reviewer would meet them: v1 promoted; v2
trained on shuffled labels, rejected; v3 the same data as v1, promoted with no
significant gain. They run in their own home (`bench/ui/.home`, git-ignored), so the
checkout's `.semilabel/` is left alone. An `mlflow server` on 127.0.0.1 serves that store
while headless Chromium renders, at 1440x900 (the first screen a reviewer sees), the
runs list, the rejected and the last run's pages, the gate image, and the registry's
version list into `bench/ui/*.png`.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow

from flows.cli import main as semilabel

HERE = Path(__file__).resolve().parent
MODEL = "semilabel-classifier"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("bench.ui: no chromium found: `apt-get install chromium` (Debian) and run again")


def _retrain(home: Path, *extra: str) -> None:
    sets = [
        f"store.root={home / 'store'}",
        f"mlflow.tracking_uri=sqlite:///{home / 'mlflow.db'}",
        f"train.run_dir={home / 'runs'}",
        *extra,
    ]
    args = ["retrain"] + [a for s in sets for a in ("--set", s)]
    if semilabel(args) not in (0, 1):  # 1: a rejected candidate is still a run to review
        sys.exit("bench.ui: the retrain could not run; see its output above")


def _shoot(browser: str, url: str, out: Path, height: int) -> None:
    subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size=1440,{height}",
            "--virtual-time-budget=30000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    print(f"wrote {out.relative_to(HERE.parent.parent)} <- {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=HERE / ".home")
    parser.add_argument("--reuse", action="store_true", help="no retrains: use the runs there")
    args = parser.parse_args(argv)
    browser = _chromium()
    home = args.home.resolve()
    if not args.reuse:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        _retrain(home)
        _retrain(home, "train.shuffle_labels=true")
        _retrain(home)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    latest = max(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    run = client.get_run(latest.run_id)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            sys.exit("bench.ui: mlflow server did not come up within 120 s")
        exp = f"{base}/#/experiments/{run.info.experiment_id}"
        rejected = next(
            (
                v
                for v in client.search_model_versions(f"name='{MODEL}'")
                if v.tags.get("semilabel.gate") == "rejected"
            ),
            None,
        )
        shots = [(f"{exp}/runs", "runs.png")]
        if rejected is not None:
            shots.append((f"{exp}/runs/{rejected.run_id}", "run_rejected.png"))
        page = f"{exp}/runs/{run.info.run_id}"
        shots += [
            (page, "run.png"),
            (f"{page}/artifacts/gate/gate_checks.png", "artifacts.png"),
            (f"{base}/#/models/{MODEL}", "versions.png"),
        ]
        for url, name in shots:
            view = "?workflowType=machine_learning" if "/runs" in url else ""
            _shoot(browser, url + view, HERE / name, 900)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
