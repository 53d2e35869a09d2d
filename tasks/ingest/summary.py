"""What an ingest did: `IngestTally`, the counts kept while chunks are written, and
`IngestSummary`, the frozen result an ingest returns (with the rows of its table and,
when nothing usable came in, why and what to change)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# What to change when one reason quarantined everything (IngestSummary.nothing_usable).
_FIXES = {
    "wrong_channels": "set ingest.convert=auto (converts any image mode to train.channels)",
    "too_many_pixels": "raise ingest.max_pixels if these images are genuine",
    "not_an_image": "check that source.path points at image files (JPEG, PNG, ...)",
    "unreadable": "check that the files exist and can be read by this user",
    "empty_file": "the files are empty (0 bytes): copy them again",
    "truncated_or_corrupt": "the files are damaged: copy them again",
    "label_not_in_taxonomy": "set taxonomy.classes to your class names (semilabel init "
    "PATH --out FILE writes a config with them)",
}


class IngestError(RuntimeError):
    """An ingest stored nothing a run could use; the message says why and what to change."""


def target_mode(channels: int) -> str:
    """The Pillow mode training reads for `train.channels`: `L` for 1, `RGB` for 3."""
    return "L" if channels == 1 else "RGB"


@dataclass(frozen=True)
class IngestSummary:
    source: str
    run_id: str
    seen: int
    ingested: int
    duplicates: int
    quarantined: dict[str, int]
    label_events: int
    label_events_duplicate: int
    labeled: int
    unlabeled: int
    gold: int
    bytes_ingested: int
    elapsed_s: float
    # new examples whose mode is not what training reads, by mode (decoding converts
    # them to `converted_to`; the stored bytes stay the original), and those EXIF turns
    converted: dict[str, int] = field(default_factory=dict)
    converted_to: str = "L"
    exif_rotated: int = 0
    quarantined_total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarantined_total", sum(self.quarantined.values()))

    def nothing_usable(self) -> str | None:
        """Why this ingest stored nothing a run can use (every record quarantined, or every
        label refused), with the key to change; None when something usable came in."""
        if not self.quarantined:
            return None
        top, n = max(self.quarantined.items(), key=lambda kv: kv[1])
        fix = _FIXES.get(top, "see the quarantine/ dataset for each record and its reason")
        if self.seen and self.ingested == 0 and self.duplicates == 0:
            return (
                f"all {self.seen} records from {self.source} were quarantined, nothing was "
                f"stored; most for {top} ({n}): {fix}"
            )
        refused = self.quarantined.get("label_not_in_taxonomy", 0)
        if refused and self.label_events == 0 and self.label_events_duplicate == 0:
            return (
                f"{self.ingested} images were stored but all {refused} labels from "
                f"{self.source} were quarantined as label_not_in_taxonomy: "
                f"{_FIXES['label_not_in_taxonomy']}"
            )
        return None

    def rows(self) -> list[dict[str, object]]:
        """The summary as (metric, value) rows, for tables and printing."""
        rows: list[dict[str, object]] = [
            {"metric": "records seen", "value": self.seen},
            {"metric": "examples ingested", "value": self.ingested},
            {"metric": "duplicates skipped", "value": self.duplicates},
            {"metric": "quarantined", "value": self.quarantined_total},
        ]
        rows += [
            {"metric": f"  quarantined: {reason}", "value": n}
            for reason, n in sorted(self.quarantined.items())
        ]
        rows += self._conversion_rows()
        rows += [
            {"metric": "new examples labeled", "value": self.labeled},
            {"metric": "new examples unlabeled", "value": self.unlabeled},
            {"metric": "new examples in gold holdout", "value": self.gold},
            {"metric": "label events written", "value": self.label_events},
            {"metric": "label events already present", "value": self.label_events_duplicate},
            {"metric": "MB ingested", "value": round(self.bytes_ingested / 1e6, 3)},
            {"metric": "seconds", "value": round(self.elapsed_s, 2)},
        ]
        return rows

    def _conversion_rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        if self.converted:
            rows.append(
                {
                    "metric": f"converted to {self.converted_to} when decoded",
                    "value": sum(self.converted.values()),
                }
            )
            rows += [
                {"metric": f"  converted: from {mode}", "value": n}
                for mode, n in sorted(self.converted.items())
            ]
        if self.exif_rotated:
            rows.append({"metric": "turned upright (EXIF orientation)", "value": self.exif_rotated})
        return rows


@dataclass
class IngestTally:
    """The counts of one ingest, added to as each chunk is written."""

    seen: int = 0
    ingested: int = 0
    duplicates: int = 0
    labeled: int = 0  # new examples with a label in the taxonomy
    gold: int = 0  # new examples in the gold holdout
    bytes: int = 0  # of the new examples' images
    label_events: int = 0
    label_events_duplicate: int = 0
    exif_rotated: int = 0  # new examples EXIF turns upright
    quarantined: Counter[str] = field(default_factory=Counter)  # by reason
    converted: Counter[str] = field(default_factory=Counter)  # new examples by source mode

    def summary(
        self, *, source: str, run_id: str, elapsed_s: float, converted_to: str
    ) -> IngestSummary:
        return IngestSummary(
            source=source,
            run_id=run_id,
            seen=self.seen,
            ingested=self.ingested,
            duplicates=self.duplicates,
            quarantined=dict(self.quarantined),
            label_events=self.label_events,
            label_events_duplicate=self.label_events_duplicate,
            labeled=self.labeled,
            unlabeled=self.ingested - self.labeled,
            gold=self.gold,
            bytes_ingested=self.bytes,
            elapsed_s=elapsed_s,
            converted=dict(sorted(self.converted.items())),
            converted_to=converted_to,
            exif_rotated=self.exif_rotated,
        )
