"""Label health in Prometheus: the exposition (and `promtool check metrics` on it), a
scrape's bounded work and stale series, a real Prometheus scraping `semilabel metrics
serve`, the alert rules (promtool), and the dashboard and rules referring only to
metrics semilabel exports."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.monitor import label_health_inputs
from tasks.slis import LabelHealth, RunFacts, label_health, record_slis
from tasks.slis.catalog import METRICS
from tasks.slis.compute import Sli
from tasks.slis.health import run_rows
from tasks.slis.prometheus import exposition, families
from tasks.store import SLIS, Store

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


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip(
            "promtool is not installed (Debian: apt-get install prometheus); "
            ".ci/run installs it where it can"
        )
    return promtool


def _check_metrics(promtool: str, text: bytes) -> None:
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    out = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0 and not out.strip(), out


def test_promtool_accepts_the_exposition_of_a_real_store(store_cfg):
    """Base units (seconds, not hours), names, help texts: what Prometheus's own linter
    checks, on every metric of the catalog with the values a run leaves."""
    promtool = _promtool()
    store = Store(store_cfg.store.root)
    health = label_health(store, label_health_inputs(store_cfg), RunFacts(flow="monitor"), "run-1")
    age = next(s for s in health.slis if s.metric.startswith("label_age_median"))
    assert age.metric == "label_age_median_seconds"
    assert 0 < age.value < 3600  # the labels were made seconds ago, in seconds
    record_slis(store, LabelHealth("retrain", "run-0", _one_of_each()))
    _check_metrics(promtool, exposition(store_cfg.store.root))


def _scraped(root: str) -> dict[str, dict[tuple, float]]:
    return {
        f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
        for f in text_string_to_metric_families(exposition(root).decode())
    }


def test_a_scrape_serves_each_flows_latest_run_and_not_the_history(tmp_path):
    """Many runs later a scrape still reads only what the latest run of each flow
    produced: the same scrape with the history moved away; a labeling function no
    longer reported (removed) is gone, not exported forever at its last value."""
    root = str(tmp_path / "store")
    store = Store(root)
    for i in range(30):
        record_slis(
            store,
            LabelHealth(
                "retrain",
                f"retrain-{i}",
                [
                    Sli("label_coverage_ratio", i / 100),
                    Sli(
                        "label_accuracy_gold_ratio",
                        0.9,
                        (("source_kind", "rule"), ("source", f"lf-{i}")),
                    ),
                    *([Sli("gate_passed", 1.0)] if i < 29 else []),
                ],
            ),
        )
        if i == 10:  # the monitor ran once, long ago: its series stay its latest
            record_slis(store, LabelHealth("monitor", "monitor-0", [Sli("gold_shift", 0.0)]))
    scraped = _scraped(root)
    accuracy = scraped["semilabel_label_accuracy_gold_ratio"]
    assert list(accuracy) == [(("source", "lf-29"), ("source_kind", "rule"))], accuracy
    assert scraped["semilabel_label_coverage_ratio"] == {(): 0.29}
    assert "semilabel_gate_passed" not in scraped  # the latest retrain did not report it
    assert scraped["semilabel_gold_shift"] == {(): 0.0}
    assert set(scraped["semilabel_run_success"]) == {
        (("flow", "retrain"),),
        (("flow", "monitor"),),
    }
    # bounded: the scrape does not read, nor even list, the history
    before = exposition(root)
    store.fs.move(store.path(SLIS), f"{store.base}/history-moved-away")
    assert exposition(root) == before


def test_a_store_from_before_the_latest_files_is_served_from_its_history_once(tmp_path):
    """History written by an earlier semilabel (no latest files): the first scrape
    derives each flow's latest run from it and keeps that, so later scrapes are bounded;
    a run that finishes after a newer one does not replace it."""
    import pyarrow as pa

    from tasks.store import SCHEMAS, utcnow

    root = str(tmp_path / "store")
    store = Store(root)
    t0 = utcnow()

    def rows(flow: str, run: str, at_s: float, series: list[Sli]) -> pa.Table:
        at = t0 + timedelta(seconds=at_s)
        return pa.Table.from_pylist(
            [
                {
                    "run_id": run,
                    "flow": flow,
                    "computed_at": at,
                    "metric": x.metric,
                    "labels": json.dumps(dict(x.labels), sort_keys=True),
                    "value": x.value,
                    "threshold": None,
                    "breached": None,
                }
                for x in series
            ],
            schema=SCHEMAS[SLIS],
        )

    lf = (("source_kind", "rule"), ("source", "removed-lf"))
    store.write(SLIS, rows("retrain", "r1", 0, [Sli("label_accuracy_gold_ratio", 0.9, lf)]))
    store.write(SLIS, rows("retrain", "r2", 10, [Sli("label_coverage_ratio", 0.5)]))
    store.write(SLIS, rows("monitor", "m1", 5, [Sli("gold_shift", 1.0)]))
    scraped = _scraped(root)
    assert scraped["semilabel_label_coverage_ratio"] == {(): 0.5}
    assert scraped["semilabel_gold_shift"] == {(): 1.0}
    assert "semilabel_label_accuracy_gold_ratio" not in scraped  # r2 no longer reports it
    store.fs.move(store.path(SLIS), f"{store.base}/history-moved-away")
    assert _scraped(root) == scraped  # derived once, kept

    from tasks.slis.latest import write_latest

    write_latest(store, "retrain", rows("retrain", "r0", -60, [Sli("label_coverage_ratio", 0.1)]))
    assert _scraped(root) == scraped  # an older run finishing late changes nothing


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
        store,
        label_health_inputs(store_cfg),
        RunFacts(flow="monitor", pseudo_label_precision=0.9),
        "run-1",
    )
    measured = {(s.metric, s.labels) for s in [*health.slis, *run_rows(health)]}
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
        _check_metrics(promtool, scraped.encode())  # Prometheus's linter on a real scrape
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


def test_a_pushgateway_url_with_user_info_pushes_with_basic_auth(caplog, pushgateway):
    """`metrics.pushgateway_url: http://user:password@host:port`: the credentials go in
    an Authorization header (not in the URL, where urllib would take them for the host),
    and a failed push's warning does not show the password."""
    import base64

    from tasks.slis.prometheus import push_slis

    port, seen = pushgateway
    health = LabelHealth("retrain", "run-1", [Sli("label_coverage_ratio", 0.5)])
    url = f"http://pusher:PUSH-PW@127.0.0.1:{port}"
    assert push_slis(url, "semilabel", health) is None  # pushed
    ((path, body, auth),) = seen
    assert path == "/metrics/job/semilabel/flow/retrain"
    assert "semilabel_label_coverage_ratio 0.5" in body
    assert auth == "Basic " + base64.b64encode(b"pusher:PUSH-PW").decode()

    caplog.clear()
    url = f"http://pusher:PUSH-PW@127.0.0.1:{_free_port()}/?token=TOK"
    why = push_slis(url, "semilabel", health)  # nobody listens: tried 3 times, then said
    assert why is not None and why.startswith("could not push label-health metrics to http")
    assert "(try 3 of 3)" in why and "pusher:***@127.0.0.1" in why
    assert caplog.text.count("could not push") == 3 and "pusher:***@127.0.0.1" in caplog.text
    assert "PUSH-PW" not in caplog.text + why and "TOK" not in caplog.text + why
