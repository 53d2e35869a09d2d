"""The ingest flow: read the configured source into the store, then publish a summary.

semilabel ingest --set source.kind=image_folder --set source.path=./images
python -m flows.ingest --set source.kind=manifest --set source.path=data/manifest.csv
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import load_config
from tasks.ingest import IngestError, IngestSummary, ingest_source, publish_ingest_summary


@flow(name="ingest")
def ingest(
    config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> IngestSummary:
    """Ingest images and their labels into the store.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file, e.g. {"source.kind": "image_folder"}.
    """
    cfg = load_config(config_path, overrides)
    summary = ingest_source(
        cfg.data_spec(), cfg.source, cfg.ingest, run_id=str(flow_run.id or "local")
    )
    publish_ingest_summary(summary, cfg.store.root)
    problem = summary.nothing_usable()
    if problem:  # a Failed run (CLI exit 1) that says what to change
        raise IngestError(problem)
    return summary


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("ingest", ingest))
