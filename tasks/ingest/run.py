"""The ingest stage's Prefect tasks: ingest the configured source into the store
(`ingest_source`), and publish what it did as a table artifact (`publish_ingest_summary`)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.data import DataSpec, IngestConfig, SourceConfig
from configs.redact import redact_text
from tasks.ingest.sources import open_source
from tasks.ingest.summary import IngestSummary
from tasks.ingest.writer import ingest_records
from tasks.progress import stage_progress
from tasks.store import Store


@task(name="ingest-source", cache_policy=NO_CACHE)
def ingest_source(
    spec: DataSpec, source: SourceConfig, ingest: IngestConfig, run_id: str
) -> IngestSummary:
    """Ingest `source` into the store of `spec`."""
    name, total, records = open_source(spec, source)
    bar = stage_progress("ingest", total)
    summary = ingest_records(
        Store(spec.root),
        records,
        spec,
        ingest,
        source_name=name,
        run_id=run_id,
        total=total,
        progress=lambda done, _total: bar.update(done),
    )
    bar.finish(summary.seen)
    get_run_logger().info(
        "ingested %d new examples from %s (%d duplicates, %d quarantined) in %.1fs",
        summary.ingested,
        name,
        summary.duplicates,
        summary.quarantined_total,
        summary.elapsed_s,
    )
    problem = summary.nothing_usable()
    if problem:
        get_run_logger().warning(problem)
    return summary


@task(name="publish-ingest-summary", cache_policy=NO_CACHE)
def publish_ingest_summary(summary: IngestSummary, store_root: str) -> None:
    """A table artifact with this run's counts and the store's totals."""
    totals = Store(store_root).counts()
    rows = summary.rows() + [
        {"metric": "store: examples", "value": totals.examples},
        {"metric": "store: label events", "value": totals.label_events},
        {"metric": "store: quarantined", "value": totals.quarantined},
    ]
    create_table_artifact(
        table=rows,
        key="ingest-summary",
        description=redact_text(f"Ingest of {summary.source} into {store_root.split('?')[0]}"),
    )
