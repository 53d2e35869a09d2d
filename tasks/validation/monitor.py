"""The monitor's comparison of the live champion now with the champion at its gate."""

from __future__ import annotations

from dataclasses import dataclass, field

from configs.gate import MonitorConfig
from tasks.validation.evidence import Bounds
from tasks.validation.gate import Thresholds
from tasks.validation.metrics import HIGHER_IS_BETTER

# -- the monitor's comparison ------------------------------------------------------------


def regressions_since_gate(
    now: dict[str, Bounds], baseline: dict[str, float], monitor: MonitorConfig
) -> list[str]:
    """Each metric whose bounds show it worse than at the champion's gate by more than its
    tolerance, beyond noise (a NaN counts as worse), as a sentence. A drop within the
    bounds is not a regression: the monitor never rolls back on noise."""
    t = monitor.tolerance
    out = []
    for metric, tol in Thresholds(t.accuracy, t.macro_f1, t.ece).items():
        if tol is None or metric not in baseline or metric not in now:
            continue
        b, base = now[metric], baseline[metric]
        hib = HIGHER_IS_BETTER[metric]
        limit = base - tol if hib else base + tol
        best = b.high if hib else b.low
        if b.value != b.value or (best < limit if hib else best > limit):
            out.append(
                f"{metric} {base:.4f} -> {b}: worse by {abs(b.value - base):.4f}, beyond the "
                f"tolerance {tol} and beyond noise ({'upper' if hib else 'lower'} bound "
                f"{best:.4f} {'<' if hib else '>'} {limit:.4f})"
            )
    return out


@dataclass(frozen=True)
class MonitorReport:
    """What one monitor run found about the live champion, and what it did.

    action: ok | rolled_back | gold_shifted | no_champion | no_baseline |
    insufficient_gold | champion_moved | regressed_no_rollback. Only `ok` vouches for the
    champion. `gold_shifted`: the champion regressed, but the version a rollback would
    restore is no better on the same gold, so the gold or the data moved, not the model:
    nothing is rolled back, and label health raises an alert."""

    model_name: str
    champion_version: str | None  # the version measured (before any action)
    action: str
    n_gold: int
    metrics: dict[str, float]
    baseline: dict[str, float]  # the champion's gate-time metrics
    regressions: list[str]
    rolled_back_to: str | None = None
    absent_classes: tuple[str, ...] = ()
    detail: str = ""
    label_health: str = ""  # the label-health report of the same run (Markdown)
    bounds: dict[str, Bounds] = field(default_factory=dict)  # the metrics now, with bounds
    confidence: float = 0.95

    @property
    def healthy(self) -> bool:
        return self.action == "ok"

    @property
    def settled(self) -> bool:
        """Nothing is left for a person to do: the champion is ok, there is none yet, a
        regression was rolled back, or another run moved the champion meanwhile (the
        next check measures the new one). Anything else (a regression not rolled back,
        a champion that cannot be vouched for) fails a strict run."""
        return self.action in ("ok", "no_champion", "rolled_back", "champion_moved")

    def state_message(self) -> str:
        """The monitor run's final state message, naming the champion it leaves."""
        v = f"v{self.champion_version}" if self.champion_version else ""
        if self.action == "no_champion":
            return (
                f"{self.model_name}: no champion yet; nothing to monitor until a retrain "
                "promotes one"
            )
        if self.action == "rolled_back":
            return (
                f"{self.model_name} {v} regressed ({'; '.join(self.regressions)}); rolled "
                f"back: the champion is now v{self.rolled_back_to}"
            )
        return f"{self.model_name} {v}: {self.action}" + (f": {self.detail}" if self.detail else "")
