"""Prefect flows: one module per user-facing flow; `flows.cli` is the `semilabel` CLI."""

import os

# Set before Prefect is imported anywhere in the process: quiet the temporary local
# server's analytics, and route our own modules' logs into Prefect's run logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,models,configs")
# MLflow's per-file download bars would interleave with our own progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
