"""One run's label health: its SLIs, which breached, and how they read for a person."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.slis.catalog import METRICS
from tasks.slis.compute import Sli
from tasks.store import utcnow


class LabelHealthAlert(RuntimeError):
    """A run found label-health breaches and was asked to fail on them."""

    def __init__(self, health: LabelHealth):
        self.health = health
        super().__init__(
            f"{len(health.breaches)} label-health breach(es): "
            + "; ".join(f"{s.metric} {dict(s.labels)}" for s in health.breaches)
        )


@dataclass(frozen=True)
class LabelHealth:
    flow: str
    run_id: str
    slis: list[Sli]
    # why the Pushgateway did not get them, after its tries (None: pushed, or no gateway)
    push_error: str | None = None

    @property
    def breaches(self) -> list[Sli]:
        return [s for s in self.slis if s.breached]

    def rows(self) -> list[dict[str, object]]:
        return [
            {
                "sli": s.metric
                + ("{" + ",".join(f"{k}={v}" for k, v in s.labels) + "}" if s.labels else ""),
                "value": round(s.value, 4),
                "threshold": "—" if s.threshold is None else s.threshold,
                "status": "BREACH" if s.breached else ("ok" if s.breached is False else "—"),
            }
            for s in self.slis
        ]

    def markdown(self) -> str:
        if not self.breaches:
            n = len(self.slis)
            return f"# Label health: OK\n\n{n} SLIs, no breach ({self.flow} {self.run_id}).\n"
        lines = [
            f"# Label health: {len(self.breaches)} BREACH(ES)",
            "",
            "| SLI | value | threshold | what to do |",
            "|---|---:|---:|---|",
        ]
        for s in self.breaches:
            name = s.metric + (" " + ", ".join(f"{k}={v}" for k, v in s.labels) if s.labels else "")
            lines.append(
                f"| {name} | {s.value:.4f} | {s.threshold} | {METRICS[s.metric].runbook} |"
            )
        return "\n".join(lines) + "\n"


def breach_rows(health: LabelHealth) -> list[Sli]:
    """One `sli_breach` row per SLI that has a threshold: 1 if any of its series breached."""
    flags: dict[str, bool] = {}
    for s in health.slis:
        if s.breached is not None:
            flags[s.metric] = flags.get(s.metric, False) or bool(s.breached)
    return [Sli("sli_breach", float(b), (("sli", m),)) for m, b in sorted(flags.items())]


def run_rows(health: LabelHealth) -> list[Sli]:
    flow = (("flow", health.flow),)
    return [
        Sli("run_success", 1.0, flow),
        Sli("run_timestamp_seconds", utcnow().timestamp(), flow),
        Sli("health_breaches", float(len(health.breaches)), flow),
        *breach_rows(health),
    ]
