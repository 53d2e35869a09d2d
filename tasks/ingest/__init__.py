"""Ingestion: read a source (`sources`), check every image, dedupe by content, write to
the store (`writer`); the Prefect tasks are here.

Sources yield `RawRecord`s lazily (source URI, optional label, either the bytes or the
path of a local file to read, and a manifest's metadata columns). Records go to worker
processes in small batches; the workers read the files, decode and check every image and
hash it, and send back the results with the bytes they read, so the main process only
walks the source, dedupes and writes. Results are gathered, in source order, into chunks
written as one examples file, one label events file and one quarantine file per chunk,
each atomically. Example ids are content hashes, and a label event is written only when
what this source says about an example changed (`tasks.store.SourceLog`), so running the
same ingest twice, or again after a crash, adds nothing twice, while a label the source
changed back and forth is a new event every time.

Each chunk is committed under the store's commit lease: the ingest first catches up
with every file other writers added since it last looked, then dedupes against them and
writes. Two ingests of overlapping data running at once, on one machine or several,
store each example and each event once.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.redact import redact_text
from configs.schema import Config
from tasks.ingest.sources import (
    DataContractError,
    RawRecord,
    image_folder_records,
    manifest_records,
    mnist5k_pngs,
    mnist5k_records,
    open_source,
)
from tasks.ingest.writer import IngestError, IngestSummary, ingest_records
from tasks.progress import stage_progress
from tasks.store import Store

__all__ = [
    "DataContractError",
    "IngestError",
    "IngestSummary",
    "RawRecord",
    "image_folder_records",
    "ingest_records",
    "ingest_source",
    "manifest_records",
    "mnist5k_pngs",
    "mnist5k_records",
    "open_source",
    "publish_ingest_summary",
]

log = logging.getLogger(__name__)

# -- Prefect tasks ---------------------------------------------------------------------


@task(name="ingest-source", cache_policy=NO_CACHE)
def ingest_source(cfg: Config, run_id: str) -> IngestSummary:
    """Ingest the configured source into the configured store."""
    name, total, records = open_source(cfg)
    bar = stage_progress("ingest", total)
    summary = ingest_records(
        Store(cfg.store.root),
        records,
        cfg,
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
