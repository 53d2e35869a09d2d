"""The monitor flow: re-evaluate the live champion on the current gold holdout (new gold
labels arrive between runs) and roll back automatically when it has regressed beyond
`monitor.tolerance` against its own gate-time metrics.

    semilabel monitor
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from configs.schema import load_config
from tasks.validation import MonitorReport, check_champion


@flow(name="monitor")
def monitor(
    config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> MonitorReport:
    """Check the champion on current gold; roll back on regression.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file.
    """
    return check_champion(load_config(config_path, overrides))


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(["monitor", *sys.argv[1:]]))
