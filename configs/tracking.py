"""Where runs and models are recorded: the MLflow tracking store and registry."""

from __future__ import annotations

from pydantic import Field

from configs.base import Section


class MlflowConfig(Section):
    tracking_uri: str = Field(
        "sqlite:///.semilabel/mlflow.db", description="MLflow tracking URI (file, sqlite, http)."
    )
    experiment: str = Field("semilabel", description="MLflow experiment name.")
    model_name: str = Field("semilabel-classifier", description="Registered model name.")
    artifact_root: str | None = Field(
        None,
        description="Where a new experiment's artifacts go: a folder or s3://... (default: "
        "`artifacts/` beside a local SQLite store, the server's default for http(s)).",
    )
    ui_url: str = Field(
        "http://127.0.0.1:5000",
        description="The MLflow UI the CLI links runs to (the tracking server's URL when "
        "tracking_uri is http(s)).",
    )
    trust_pickled_models: bool = Field(
        False,
        description="Load model versions logged in the old pickled format (semilabel 0.1). "
        "Unpickling runs code stored in the registry: turn on only for a registry no one "
        "else can write to, e.g. to evaluate an old champion once (docs/loop/registry.md, "
        "Model format).",
    )
    registry_lock_timeout_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="How long retrain, monitor and rollback wait for the registry lock "
        "(one writer per registered model at a time) before giving up.",
    )
