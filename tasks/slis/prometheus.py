"""Label health in Prometheus's text format (prometheus_client): every series of each
flow's latest SLI computation (`tasks.slis.latest`), with `# HELP` text for each metric
and the few labels the catalog allows (class, source kind, stream, check, flow: never an
example or an id). A series the latest run of its flow no longer produced is not
exported.

`semilabel metrics serve` exposes them for scraping (read from the store at every
scrape: a few small files, however long the history), `semilabel metrics write FILE`
writes them for node_exporter's textfile collector, and runs push theirs to a
Pushgateway when `metrics.pushgateway_url` is set (user info in the URL: basic auth).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.registry import Collector

from configs.redact import redact_text
from tasks.slis.catalog import METRICS
from tasks.slis.compute import Sli
from tasks.slis.health import LabelHealth, run_rows
from tasks.slis.latest import read_latest
from tasks.store import Store

log = logging.getLogger(__name__)


def latest_series(store: Store) -> list[Sli]:
    """Every (metric, labels) series of each flow's latest computation; a series two
    flows report (coverage, say) at its newer value."""
    table = read_latest(store)
    newest: dict[tuple[str, str], tuple] = {}
    for metric, labels, value, at in zip(
        *(table.column(c).to_pylist() for c in ("metric", "labels", "value", "computed_at")),
        strict=True,
    ):
        key = (metric, labels)
        if key not in newest or at >= newest[key][0]:
            newest[key] = (at, value)
    return [
        Sli(metric, value, tuple(sorted(json.loads(labels).items())))
        for (metric, labels), (_, value) in sorted(newest.items())
    ]


def families(series: Iterable[Sli]) -> Iterator[GaugeMetricFamily]:
    """One gauge family per catalog metric present in `series`."""
    by_metric: dict[str, list[Sli]] = {}
    for s in series:
        if s.metric in METRICS:
            by_metric.setdefault(s.metric, []).append(s)
    for name, rows in sorted(by_metric.items()):
        meta = METRICS[name]
        family = GaugeMetricFamily(meta.full_name, meta.help, labels=list(meta.labels))
        for s in rows:
            labels = dict(s.labels)
            if set(labels) != set(meta.labels):  # never invent or drop a label
                log.debug("skipping %s with labels %s", name, labels)
                continue
            family.add_metric([labels[k] for k in meta.labels], s.value)
        yield family


class StoreCollector(Collector):
    """Reads the store at each scrape, so a long-running exporter stays current."""

    def __init__(self, store_root: str):
        self.store_root = store_root

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from families(latest_series(Store(self.store_root)))


def registry_for(store_root: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store_root))
    return registry


def exposition(store_root: str) -> bytes:
    return generate_latest(registry_for(store_root))


def write_textfile(store_root: str, path: str) -> int:
    """Write the exposition to `path` atomically (node_exporter's textfile collector
    reads `*.prom` files); returns the number of series."""
    registry = registry_for(store_root)
    write_to_textfile(path, registry)
    return sum(len(f.samples) for f in registry.collect())


def serve(store_root: str, host: str, port: int) -> None:
    """Serve /metrics on host:port until interrupted."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry_for(store_root))
    log.info("serving label-health metrics on http://%s:%d/metrics", host, port)
    try:
        while thread.is_alive():
            time.sleep(1)
    finally:
        server.shutdown()


def _gateway(url: str) -> tuple[str, Callable[..., Callable[[], None]]]:
    """The URL to push to and how: basic auth with the URL's user info, sent as a
    header rather than left in the URL (where urllib would take it for the host)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None and parts.password is None:
        return url, default_handler
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    netloc = parts.netloc.rpartition("@")[2]

    def handler(
        url: str, method: str, timeout: float | None, headers: list, data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return urlunsplit(parts._replace(netloc=netloc)), handler


PUSH_DELAYS_S = (2.0, 10.0)  # between the tries of a push


def push_slis(url: str, job: str, health: LabelHealth) -> str | None:
    """Push one run's SLIs to a Pushgateway, grouped by flow, trying again after each of
    PUSH_DELAYS_S. Returns None when pushed, else why not (the URL redacted): a
    monitoring outage must not fail the run, and the run says what was not pushed."""

    class _Run(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield from families([*health.slis, *run_rows(health)])

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Run())
    gateway, handler = _gateway(url)
    tries = len(PUSH_DELAYS_S) + 1
    for attempt in range(1, tries + 1):
        try:
            push_to_gateway(
                gateway,
                job=job,
                registry=registry,
                grouping_key={"flow": health.flow},
                handler=handler,
            )
            return None
        except OSError as exc:
            why = (
                f"could not push label-health metrics to {redact_text(url)} "
                f"(try {attempt} of {tries}): {redact_text(str(exc))}"
            )
            log.warning("%s", why)
            if attempt < tries:
                time.sleep(PUSH_DELAYS_S[attempt - 1])
    return why + "; the SLIs are in the store and in MLflow"
