"""Where ingest checks its batches: every runner stores what the default stores, and
the checks come back in source order."""

from pathlib import Path

import pytest

from configs.data import IngestConfig
from tasks.images.check import READ_ERROR, check_image
from tasks.ingest import RawRecord, image_folder_records
from tasks.ingest.runners import open_executor
from tasks.store import EXAMPLES, LABELS, QUARANTINE, Store, content_id
from tests.conftest import png, png_bomb, write
from tests.tasks.ingest.conftest import ingest


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["dask", "threads"])
def test_every_runner_stores_exactly_what_the_default_stores(
    runner: str, messy_folder: dict[str, bytes], tmp_path: Path, monkeypatch
):
    """The same messy folder through a local Dask cluster (2 worker processes) or
    threads: the same examples, labels and quarantine rows as in process."""

    def contents(root: str) -> tuple:
        store = Store(root)
        examples = store.read(EXAMPLES, ["example_id", "source_uri"]).to_pylist()
        labels = store.read(LABELS, ["example_id", "label"]).to_pylist()
        quarantined = store.read(QUARANTINE, ["reason", "source_uri"]).to_pylist()
        key = lambda r: tuple(sorted((k, str(v)) for k, v in r.items()))  # noqa: E731
        return tuple(sorted(map(key, rows)) for rows in (examples, labels, quarantined))

    import tasks.ingest.runners as runners

    opened: list[str] = []

    def spy(ing):  # which executor the checks really ran on
        executor, close = open_executor(ing)
        opened.append(type(executor).__name__)
        return executor, close

    monkeypatch.setattr(runners, "open_executor", spy)
    base = str(tmp_path / "base")
    other = str(tmp_path / runner)
    first = ingest(base, image_folder_records(tmp_path / "images"))
    second = ingest(
        other,
        image_folder_records(tmp_path / "images"),
        **{"ingest.runner": runner, "ingest.workers": 2},
    )
    assert (second.ingested, second.quarantined) == (first.ingested, first.quarantined)
    # ingest.convert auto: the RGB image is stored (converted when decoded)
    assert second.ingested == 8 and sum(second.quarantined.values()) == 5
    assert contents(other) == contents(base)
    # in process for the default (12 files, 1 worker); the asked-for runner otherwise
    assert opened == [{"dask": "ClientExecutor", "threads": "ThreadPoolExecutor"}[runner]]


def test_check_image_decides_from_header_before_decoding():
    assert check_image(png_bomb(), 1_000_000, (1,))[:2] == ("reject", "too_many_pixels")
    ok = check_image(png(1, size=20), 1_000_000, (1,))
    assert ok[0] == "ok" and ok[2:] == (20, 20, 1, "L", False)
    assert check_image(png(1, mode="RGBA"), 1_000_000, (3, 4))[4] == 4


@pytest.mark.parametrize(("runner", "workers"), [("processes", 1), ("threads", 2)])
def test_checks_come_back_in_source_order_and_a_batch_cut_at_its_byte_budget_resumes(
    runner: str, workers: int, tmp_path: Path, monkeypatch
):
    import tasks.ingest.runners as runners

    images = [png(i) for i in range(40)]
    records = []
    for i, data in enumerate(images):
        if i % 3 == 0:  # bytes from the source
            records.append(RawRecord(f"mem://{i}", data, None))
        else:  # a file the runner reads
            write(tmp_path / f"{i}.png", data)
            records.append(RawRecord(f"file://{i}", None, None, None, str(tmp_path / f"{i}.png")))
    records.append(RawRecord("mem://unreadable", None, None, ("missing_file", "gone")))
    records.append(RawRecord("file://missing", None, None, None, str(tmp_path / "missing.png")))
    # about three files a worker task: every batch of the listing is cut and resumed
    monkeypatch.setattr(runners, "MAX_BATCH_BYTES", 3 * len(images[0]))
    ing = IngestConfig(runner=runner, workers=workers)

    with runners.checked_batches(iter(records), ing, total=len(records)) as checked:
        batches = list(checked)

    assert len(batches) >= 10
    assert [r for b in batches for r in b.records] == records  # in source order
    checks = [c for b in batches for c in b.checks]
    datas = [d for b in batches for d in b.datas]
    assert [c[1] for c in checks[:40]] == [content_id(d) for d in images]
    assert all(c[0] == "ok" for c in checks[:40])
    assert datas[:40] == images  # the bytes, as given or as read
    assert checks[40] == ("reject", "unreadable", "no bytes could be read")
    assert checks[41][:2] == (READ_ERROR, "unreadable") and datas[40:] == [None, None]
