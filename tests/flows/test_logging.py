"""`flows/__init__.py`: our modules' INFO logs reach the console, as Prefect's own do."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging
import flows  # noqa: F401  (sets the loggers up, as every entry point does)
from prefect.logging.configuration import setup_logging

setup_logging()
logging.getLogger("models.train.start").info("train.start auto: seeded start")
logging.getLogger("tasks.registry.aliases").debug("not at the default level")
logging.getLogger("somebody.else").info("a library's info stays quiet")
"""


def test_our_info_logs_reach_the_console_and_others_stay_at_warning():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "INFO    | models.train.start - train.start auto: seeded start" in text
    assert "not at the default level" not in text
    assert "a library's info stays quiet" not in text
    assert "attempted to send logs to the API" not in text  # outside a run: console only


# A worker's flow-run process imports Prefect (and sets its logging up) before it loads
# the flow's module, and so before `flows` sets PREFECT_LOGGING_EXTRA_LOGGERS.
AFTER_PREFECT = """
import logging
from prefect import flow  # noqa: F401  (logging set up, as by `python -m prefect.engine`)
import flows  # noqa: F401

print(sorted(type(h).__name__ for h in logging.getLogger("tasks").handlers))
"""


def test_our_loggers_reach_the_run_logs_when_prefect_was_imported_first():
    import os

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_EXTRA_LOGGERS"}
    out = subprocess.run(
        [sys.executable, "-c", AFTER_PREFECT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "APILogHandler" in out.stdout, out.stdout
