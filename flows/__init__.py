"""Prefect flows: one module per user-facing flow; `flows.cli` is the `semilabel` CLI."""

import logging
import os

OUR_LOGGERS = ("tasks", "models", "configs")

# Set before Prefect is imported anywhere in the process: quiet the temporary local
# server's analytics.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Outside a flow run (a CLI command that runs none) they go to the console only.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Our loggers' level: without this they inherit the root's WARNING, and what they say at
# INFO (the training start chosen, a resumed checkpoint, a registered version) never
# reaches the console or the run's logs.
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

# Our modules' log lines go to the run's logs (the Prefect UI and API) as well as the
# console. Not through PREFECT_LOGGING_EXTRA_LOGGERS: Prefect reads it when it sets its
# logging up, at its own import, which in a worker's flow-run process (`python -m
# prefect.engine`, which loads flows/retrain.py later) comes before this package.
from prefect.logging.handlers import APILogHandler  # noqa: E402  (after the settings above)

for _name in OUR_LOGGERS:
    _logger = logging.getLogger(_name)
    if not any(isinstance(h, APILogHandler) for h in _logger.handlers):
        _logger.addHandler(APILogHandler())
