"""The ingest stage's Prefect tasks in a real flow run: `ingest_source` ingests the
source it is given into the store of the data spec, and `publish_ingest_summary` leaves
a table of the run's counts and the store's totals."""

import json
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.runtime import flow_run

from tasks.ingest import IngestSummary, ingest_source, publish_ingest_summary
from tasks.store import EXAMPLES, Store
from tests.conftest import png, write
from tests.tasks.ingest.conftest import ingest_cfg


def test_ingest_source_ingests_the_given_source_and_the_summary_is_published(
    prefect_api, tmp_path: Path
):
    manifest = tmp_path / "data" / "labels.csv"
    write(tmp_path / "data/img/a.png", png(1))
    write(tmp_path / "data/img/b.png", png(2))
    write(tmp_path / "data/img/c.png", b"not an image")
    manifest.write_text("path,label,camera\nimg/a.png,3,north\nimg/b.png,,south\nimg/c.png,1,\n")
    root = str(tmp_path / "store")
    cfg = ingest_cfg(
        root,
        **{"source.kind": "manifest", "source.path": str(manifest)},
        **{"source.metadata_columns": ["camera"]},
    )

    @flow(name="ingest-tasks-test")
    def ingest_and_publish() -> tuple[IngestSummary, str]:
        summary = ingest_source(cfg.data_spec(), cfg.source, cfg.ingest, run_id="run-7")
        publish_ingest_summary(summary, root)
        return summary, str(flow_run.id)

    summary, run_id = ingest_and_publish()

    assert (summary.source, summary.run_id) == ("manifest:labels.csv", "run-7")
    assert (summary.seen, summary.ingested, summary.labeled, summary.label_events) == (3, 2, 1, 1)
    assert summary.quarantined == {"not_an_image": 1}
    store = Store(root)
    assert (store.counts().examples, store.counts().label_events) == (2, 1)
    cameras = [dict(m) for m in store.read(EXAMPLES, ["metadata"]).column(0).to_pylist()]
    assert sorted(m["camera"] for m in cameras) == ["north", "south"]

    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ingest-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    rows = {r["metric"]: r["value"] for r in json.loads(table.data)}
    assert rows["examples ingested"] == 2 and rows["quarantined"] == 1
    assert (rows["store: examples"], rows["store: label events"]) == (2, 1)
    assert rows["store: quarantined"] == 1
    assert table.description == f"Ingest of manifest:labels.csv into {root}"
