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
logging.getLogger("tasks.registry").debug("not at the default level")
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
