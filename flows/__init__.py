"""Prefect flows: one module per user-facing flow; `flows.cli` is the `semilabel` CLI."""

import logging
import os

OUR_LOGGERS = ("tasks", "models", "configs")

# Set before Prefect is imported anywhere in the process: quiet the temporary local
# server's analytics, and route our own modules' logs into Prefect's run logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join(OUR_LOGGERS))
# Outside a flow run (a CLI command that runs none) they go to the console only.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Prefect gives extra loggers its handlers but not its level: without this they inherit
# the root's WARNING, and what they say at INFO (the training start chosen, a resumed
# checkpoint, a registered version) never reaches the console or the run's logs.
for _name in OUR_LOGGERS:
    logging.getLogger(_name).setLevel(os.environ.get("PREFECT_LOGGING_LEVEL", "INFO").upper())
# MLflow's per-file download bars would interleave with our own progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
