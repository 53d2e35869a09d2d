"""Ingestion: read a source (`sources`), check every image (`runners`), dedupe by content
(`known`) and write to the store (`writer`), counting what happened (`summary`); the
Prefect tasks are in `run`.

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

from tasks.ingest.run import ingest_source, publish_ingest_summary
from tasks.ingest.sources import (
    DataContractError,
    RawRecord,
    image_folder_records,
    manifest_records,
    mnist5k_pngs,
    mnist5k_records,
    open_source,
)
from tasks.ingest.summary import IngestError, IngestSummary
from tasks.ingest.writer import ingest_records

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
