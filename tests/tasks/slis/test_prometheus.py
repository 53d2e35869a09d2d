"""Label health in Prometheus: the exposition, a real Prometheus scraping
`semilabel metrics serve`, the alert rules (promtool), and the dashboard and rules
referring only to metrics semilabel exports."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks.slis import LabelHealth, RunFacts, label_health
from tasks.slis.catalog import METRICS
from tasks.slis.compute import Sli
from tasks.slis.health import run_rows
from tasks.slis.prometheus import exposition, families
from tasks.store import Store

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "dashboards" / "semilabel.json"
RULES = REPO / "dashboards" / "alerts.yml"
NAME = re.compile(r"\bsemilabel_[a-z_]+\b")


def referenced_metrics() -> set[str]:
    exprs = [
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
    ]
    return set(NAME.findall(" ".join(exprs))) | set(NAME.findall(RULES.read_text()))


def _one_of_each() -> list[Sli]:
    return [Sli(m.name, 0.5, tuple((k, "x") for k in m.labels)) for m in METRICS.values()]


def test_the_dashboard_and_rules_use_only_exported_metrics():
    names = referenced_metrics()
    assert names and names <= {m.full_name for m in METRICS.values()}, names - {
        m.full_name for m in METRICS.values()
    }
    # and the three rows the seed describes
    rows = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"]
    assert [r.split(":")[0] for r in rows] == ["Executive", "On-call", "Debug"]


def test_every_metric_has_help_text_and_parses():
    text = b"".join(
        f"# HELP {f.name} {f.documentation}\n# TYPE {f.name} gauge\n".encode()
        + "".join(f"{s.name}{_labels(s.labels)} {s.value}\n" for s in f.samples).encode()
        for f in families(_one_of_each())
    ).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(parsed) == {m.full_name for m in METRICS.values()}
    assert all(f.documentation for f in parsed.values())
    for m in METRICS.values():  # low cardinality: only the catalog's labels
        assert {k for s in parsed[m.full_name].samples for k in s.labels} == set(m.labels)


def _labels(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, ok, timeout_s: float = 60):  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if ok(r):
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer as expected within {timeout_s} s")


@pytest.mark.slow
def test_a_real_prometheus_scrapes_semilabel_metrics_serve(store_cfg, tmp_path):
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        pytest.skip(
            "Prometheus is not installed (Debian: apt-get install prometheus); "
            ".ci/run installs it where it can"
        )
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # real SLIs of a real store, plus one row of every other metric, as a run would leave
    store = Store(store_cfg.store.root)
    health = label_health(
        store, store_cfg, RunFacts(flow="monitor", pseudo_label_precision=0.9), "run-1"
    )
    measured = {(s.metric, s.labels) for s in [*health.slis, *run_rows(health)]}
    from tasks.slis import record_slis

    record_slis(
        store,
        LabelHealth(
            "retrain", "run-0", [s for s in _one_of_each() if (s.metric, s.labels) not in measured]
        ),
    )
    coverage = next(s.value for s in health.slis if s.metric == "label_coverage_ratio")

    port, prom_port = _free_port(), _free_port()
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "metrics",
            "serve",
            "--port",
            str(port),
            "--set",
            f"store.root={store_cfg.store.root}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"rule_files: [{RULES}]\n"
        "scrape_configs:\n  - job_name: semilabel\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        scraped = _wait(f"http://127.0.0.1:{port}/metrics", lambda r: r.status_code == 200).text
        assert scraped.encode() == exposition(store_cfg.store.root)  # what serve exposes
        names = {f.name for f in text_string_to_metric_families(scraped)}
        assert referenced_metrics() <= names, referenced_metrics() - names
        _wait(f"http://127.0.0.1:{prom_port}/-/ready", lambda r: r.status_code == 200)
        r = _wait(
            f"http://127.0.0.1:{prom_port}/api/v1/query?query=semilabel_label_coverage_ratio",
            lambda r: r.status_code == 200 and r.json()["data"]["result"],
        )
        (series,) = r.json()["data"]["result"]
        assert series["metric"]["job"] == "semilabel"
        assert float(series["value"][1]) == pytest.approx(coverage)
        rules = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=5).json()
        assert len(rules["data"]["groups"][0]["rules"]) == 9  # the rule file loaded
    finally:
        for p in (exporter, prom):
            p.terminate()
            p.wait(timeout=30)
