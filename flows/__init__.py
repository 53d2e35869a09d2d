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
# Prefect's temporary server (no PREFECT_API_URL) must start within its startup timeout,
# 20 s by default: on a busy machine (CI, a laptop running other jobs) that fails the
# command before any work. semilabel's default is START_TIMEOUT_DEFAULT_S; set
# SEMILABEL_PREFECT_START_TIMEOUT_S to change it (Prefect's own variable, when set, wins).
START_TIMEOUT_ENV = "SEMILABEL_PREFECT_START_TIMEOUT_S"
PREFECT_START_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
START_TIMEOUT_DEFAULT_S = 300
os.environ.setdefault(
    PREFECT_START_TIMEOUT_ENV, os.environ.get(START_TIMEOUT_ENV, str(START_TIMEOUT_DEFAULT_S))
)
# MLflow's per-file download bars would interleave with our own progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
