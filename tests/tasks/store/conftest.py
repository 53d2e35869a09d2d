"""What the store tests share: instants and label-model events to write into a real
label log."""

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # `tests.conftest.label_events`' default instant


def at(minutes: int) -> datetime:
    """`minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


def weak_event(
    event_id: str,
    example_id: str,
    label: str | None,
    source_name: str,
    created_at: datetime,
    *,
    run_id: str = "test",
    influenced: bool | None = None,
) -> dict:
    """A `label_model` event for `tests.conftest.label_events`: confidence 0.9, or 0 for a
    withdrawal (`label` None)."""
    return {
        "event_id": event_id,
        "example_id": example_id,
        "label": label,
        "source_kind": "label_model",
        "source_name": source_name,
        "confidence": 0.0 if label is None else 0.9,
        "created_at": created_at,
        "run_id": run_id,
        "model_influenced": influenced,
    }
