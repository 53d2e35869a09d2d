"""The MLflow model registry: register every candidate, move the `champion` alias on a
passing gate, keep the previous champion reachable, and roll back.

Who was champion when lives in version tags, so the history survives alias moves:
`semilabel.gate` (passed | rejected), `semilabel.promoted_at`,
`semilabel.previous_champion`, `semilabel.rolled_back`, `semilabel.rollback_reason`,
and the gate-time gold metrics `gate.<metric>` that monitoring compares against.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
TAG_GATE = "semilabel.gate"
TAG_PROMOTED_AT = "semilabel.promoted_at"
TAG_PREVIOUS = "semilabel.previous_champion"
TAG_ROLLED_BACK = "semilabel.rolled_back"
TAG_ROLLBACK_REASON = "semilabel.rollback_reason"
TAG_RESTORED_AT = "semilabel.restored_at"


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what to do."""


class RollbackError(RegistryError):
    """There is nothing to roll back to."""


@dataclass(frozen=True)
class RollbackResult:
    model_name: str
    from_version: str
    to_version: str
    reason: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def get_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """All versions of `name`, oldest first."""
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def register_candidate(
    client: MlflowClient,
    tracking_uri: str,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
) -> ModelVersion:
    """A new version of `name` for the candidate, tagged with everything behind it."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="semilabel classifier; alias `champion` is the serving model."
        )
    import mlflow

    # mlflow.register_model resolves a logged-model URI (models:/m-...) to its source and
    # model id, which a tracking server requires; it uses the global URIs, so set them.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    log.info("registered %s version %s from run %s", name, version.version, run_id)
    return version


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Point `champion` at `version`; the old champion becomes `previous_champion`.
    Returns the previous champion's version, if any."""
    previous = version_by_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, TAG_PROMOTED_AT, _now())
    if previous is not None and str(previous.version) != str(version):
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, str(previous.version))
        client.set_model_version_tag(name, version, TAG_PREVIOUS, str(previous.version))
        log.info("champion of %s: version %s -> %s", name, previous.version, version)
        return str(previous.version)
    log.info("champion of %s: version %s (first champion)", name, version)
    return None


def rollback(client: MlflowClient, name: str, reason: str) -> RollbackResult:
    """Move `champion` back to the latest earlier version that passed its gate, was
    promoted and has not itself been rolled back. Fails clearly when there is none."""
    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        raise RollbackError(
            f"model {name!r} has no champion: nothing to roll back. "
            "Run `semilabel retrain` to register and promote a model."
        )
    candidates = [
        v
        for v in versions(client, name)
        if int(v.version) < int(current.version)
        and v.tags.get(TAG_GATE) == "passed"
        and TAG_PROMOTED_AT in v.tags
        and v.tags.get(TAG_ROLLED_BACK) != "true"
    ]
    if not candidates:
        raise RollbackError(
            f"model {name!r}: no earlier passing version to roll back to; champion stays at "
            f"version {current.version}. Fix forward with a new `semilabel retrain`."
        )
    target = candidates[-1]
    client.set_registered_model_alias(name, CHAMPION, target.version)
    client.set_model_version_tag(name, current.version, TAG_ROLLED_BACK, "true")
    client.set_model_version_tag(name, current.version, TAG_ROLLBACK_REASON, reason[:4000])
    client.set_model_version_tag(name, target.version, TAG_RESTORED_AT, _now())
    earlier = [v for v in candidates if int(v.version) < int(target.version)]
    if earlier:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, earlier[-1].version)
    else:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    log.warning(
        "rolled back %s: champion version %s -> %s (%s)",
        name,
        current.version,
        target.version,
        reason,
    )
    return RollbackResult(name, str(current.version), str(target.version), reason)


# -- one retrain's decision -------------------------------------------------------------


@dataclass(frozen=True)
class RetrainDecision:
    model_name: str
    version: str
    decision: str  # passed | rejected
    champion_version: str | None  # after the decision
    previous_champion: str | None
    gate_summary: str
    mlflow_run_id: str
    gold_accuracy: float
    gold_macro_f1: float

    def rows(self) -> list[dict[str, object]]:
        return [
            {"metric": "registered", "value": f"{self.model_name} v{self.version}"},
            {"metric": "gate", "value": self.decision},
            {"metric": "gate detail", "value": self.gate_summary[:200]},
            {
                "metric": "champion now",
                "value": f"v{self.champion_version}" if self.champion_version else "none",
            },
            {
                "metric": "previous champion",
                "value": f"v{self.previous_champion}" if self.previous_champion else "none",
            },
            {"metric": "gold accuracy", "value": round(self.gold_accuracy, 4)},
            {"metric": "gold macro-F1", "value": round(self.gold_macro_f1, 4)},
            {"metric": "MLflow run", "value": self.mlflow_run_id},
        ]


def record_decision(cfg, train_summary, evaluation, report) -> RetrainDecision:  # noqa: ANN001
    """Log the gate (metrics, plots, report) to the candidate's MLflow run, register the
    candidate as a new version with its evidence in tags, and promote it only on a pass."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow

    from tasks.validation import plot_confusion, plot_reliability

    name = cfg.mlflow.model_name
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = get_client(cfg.mlflow.tracking_uri)
    classes = tuple(cfg.taxonomy.classes)
    run_id = train_summary.mlflow_run_id
    cand = evaluation.candidate
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"gold_{k}": v for k, v in cand.scalars().items()})
        mlflow.log_metrics({f"gold_recall_class_{c}": r for c, r in cand.per_class_recall.items()})
        if evaluation.champion is not None:
            mlflow.log_metrics(
                {f"champion_gold_{k}": v for k, v in evaluation.champion.scalars().items()}
            )
        mlflow.set_tags(
            {
                "semilabel.gate": report.decision,
                "semilabel.gold_snapshot_id": evaluation.gold.snapshot_id,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "gate_report.md").write_text(report.to_markdown())
            (d / "gate_report.json").write_text(json.dumps(report.to_dict(), indent=2))
            (d / "confusion_matrix.png").write_bytes(
                plot_confusion(cand, classes, "candidate on gold")
            )
            (d / "reliability_diagram.png").write_bytes(
                plot_reliability(
                    evaluation.candidate_probs, evaluation.gold.y.numpy(), "candidate on gold"
                )
            )
            for f in d.iterdir():
                mlflow.log_artifact(str(f), artifact_path="gate")
    tags = {
        TAG_GATE: report.decision,
        "semilabel.gate_summary": report.summary()[:4000],
        "semilabel.snapshot_id": train_summary.snapshot_id,
        "semilabel.gold_snapshot_id": evaluation.gold.snapshot_id,
        "semilabel.code_version": _code_version(),
        "semilabel.champion_at_gate": evaluation.champion_version or "none",
        **{f"gate.{k}": f"{v:.6f}" for k, v in cand.scalars().items()},
        "gate.n_gold": str(cand.n),
    }
    version = register_candidate(
        client, cfg.mlflow.tracking_uri, name, train_summary.model_uri, run_id, tags
    )
    number = str(version.version)
    previous = None
    if report.passed:
        previous = promote(client, name, number)
    else:
        log.warning(
            "candidate %s v%s rejected by the gate: %s", name, version.version, report.summary()
        )
    champion = version_by_alias(client, name, CHAMPION)
    return RetrainDecision(
        model_name=name,
        version=number,
        decision=report.decision,
        champion_version=str(champion.version) if champion else None,
        previous_champion=previous,
        gate_summary=report.summary(),
        mlflow_run_id=run_id,
        gold_accuracy=cand.accuracy,
        gold_macro_f1=cand.macro_f1,
    )


def _code_version() -> str:
    from tasks.training import code_version

    return code_version()


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="register-and-decide", cache_policy=NO_CACHE)
def register_and_decide(cfg, train_summary, evaluation, report) -> RetrainDecision:  # noqa: ANN001
    """Register the candidate; promote it only when the gate passed."""
    decision = record_decision(cfg, train_summary, evaluation, report)
    get_run_logger().info(
        "%s v%s %s; champion is %s",
        decision.model_name,
        decision.version,
        decision.decision,
        f"v{decision.champion_version}" if decision.champion_version else "none",
    )
    create_table_artifact(
        table=decision.rows(),
        key="retrain-decision",
        description=f"{decision.model_name} v{decision.version}",
    )
    return decision


@task(name="rollback-champion", cache_policy=NO_CACHE)
def rollback_champion(tracking_uri: str, model_name: str, reason: str) -> RollbackResult:
    result = rollback(get_client(tracking_uri), model_name, reason)
    create_markdown_artifact(
        f"# Rollback\n\n{model_name}: champion v{result.from_version} -> "
        f"v{result.to_version}\n\nReason: {reason}\n",
        key="rollback",
    )
    return result
