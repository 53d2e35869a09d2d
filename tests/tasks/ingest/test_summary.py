"""What an ingest reports: its counts, its table rows, and why nothing usable came in."""

from pathlib import Path

from tasks.ingest import image_folder_records
from tasks.ingest.summary import IngestTally
from tests.conftest import png, write
from tests.tasks.ingest.conftest import ingest


def test_an_ingest_that_stores_nothing_usable_says_why_and_what_to_change(
    store_root: str, tmp_path: Path
):
    for i in range(3):
        write(tmp_path / "rgb" / "cat" / f"{i}.png", png(i, mode="RGB"))
    strict = {"ingest.convert": "off", "ingest.channels": [1]}
    summary = ingest(store_root, image_folder_records(tmp_path / "rgb"), **strict)
    assert summary.ingested == 0
    problem = summary.nothing_usable()
    assert problem is not None
    assert "all 3 records" in problem and "wrong_channels (3)" in problem
    assert "ingest.convert=auto" in problem

    labels = ingest(str(tmp_path / "s2"), image_folder_records(tmp_path / "rgb"))
    problem = labels.nothing_usable()
    assert labels.ingested == 3 and problem is not None
    assert "all 3 labels" in problem and "taxonomy.classes" in problem
    assert "semilabel init" in problem


def test_a_tally_becomes_a_summary_whose_rows_show_every_count():
    tally = IngestTally(seen=12, ingested=7, duplicates=2, labeled=4, gold=1, bytes=2_500_000)
    tally.label_events, tally.label_events_duplicate, tally.exif_rotated = 4, 1, 1
    tally.quarantined.update({"not_an_image": 2, "label_not_in_taxonomy": 1})
    tally.converted.update({"RGBA": 1, "CMYK": 2})

    summary = tally.summary(source="test", run_id="r", elapsed_s=1.234, converted_to="L")

    assert (summary.unlabeled, summary.quarantined_total) == (3, 3)
    assert list(summary.converted.items()) == [("CMYK", 2), ("RGBA", 1)]  # sorted by mode
    assert summary.nothing_usable() is None  # examples came in, and a label
    rows = [(r["metric"], r["value"]) for r in summary.rows()]
    assert rows == [
        ("records seen", 12),
        ("examples ingested", 7),
        ("duplicates skipped", 2),
        ("quarantined", 3),
        ("  quarantined: label_not_in_taxonomy", 1),
        ("  quarantined: not_an_image", 2),
        ("converted to L when decoded", 3),
        ("  converted: from CMYK", 2),
        ("  converted: from RGBA", 1),
        ("turned upright (EXIF orientation)", 1),
        ("new examples labeled", 4),
        ("new examples unlabeled", 3),
        ("new examples in gold holdout", 1),
        ("label events written", 4),
        ("label events already present", 1),
        ("MB ingested", 2.5),
        ("seconds", 1.23),
    ]


def test_a_reason_without_a_known_fix_points_at_the_quarantine_dataset():
    tally = IngestTally(seen=2)
    tally.quarantined.update({"malformed_row": 2})
    summary = tally.summary(source="manifest:m.csv", run_id="r", elapsed_s=0.1, converted_to="L")
    assert summary.nothing_usable() == (
        "all 2 records from manifest:m.csv were quarantined, nothing was stored; most for "
        "malformed_row (2): see the quarantine/ dataset for each record and its reason"
    )
    assert [r["metric"] for r in summary.rows()][:5] == [
        "records seen",
        "examples ingested",
        "duplicates skipped",
        "quarantined",
        "  quarantined: malformed_row",
    ]
    assert not any("converted" in r["metric"] or "EXIF" in r["metric"] for r in summary.rows())
    assert (
        IngestTally()
        .summary(source="s", run_id="r", elapsed_s=0.0, converted_to="L")
        .nothing_usable()
        is None
    )
