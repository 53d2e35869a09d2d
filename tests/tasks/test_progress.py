"""Progress of a long stage: every update reaches the CLI's listener, and inside a real
Prefect flow run a progress artifact follows the stage to 100%."""

from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.runtime import flow_run

from tasks.progress import set_listener, stage_progress


@pytest.fixture
def heard() -> Iterator[list[tuple[str, int, int | None]]]:
    updates: list[tuple[str, int, int | None]] = []
    set_listener(lambda stage, done, total: updates.append((stage, done, total)))
    yield updates
    set_listener(None)


def test_the_listener_hears_every_update_from_the_start(heard):
    progress = stage_progress("ingest", 300)
    for done in (100, 101, 102):  # within the artifact's throttle: still every one
        progress.update(done)
    progress.finish(300)
    assert heard == [("ingest", 0, 300), ("ingest", 100, 300), ("ingest", 101, 300),
                     ("ingest", 102, 300), ("ingest", 300, 300)]  # fmt: skip


def test_a_stage_of_unknown_size_is_as_large_as_it_ended(heard):
    progress = stage_progress("apply labeling functions", None)
    progress.update(7)
    progress.finish(12)
    assert heard[-2:] == [
        ("apply labeling functions", 7, None),
        ("apply labeling functions", 12, 12),
    ]
    set_listener(None)
    progress.update(13)  # no listener: nothing is heard, nothing fails
    assert len(heard) == 3


def test_in_a_flow_run_a_progress_artifact_follows_the_stage(prefect_api):
    @flow(name="progress-test")
    def stage() -> str:
        progress = stage_progress("Train: student", 40)
        progress.update(10, force=True)
        progress.finish(40)
        return str(flow_run.id)

    run_id = stage()
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["train--student-progress"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    assert artifact.type == "progress" and float(artifact.data) == 100.0
    assert artifact.description == "Train: student: 40/40"
