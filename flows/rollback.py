"""The rollback flow: move `champion` back to the previous passing version.

semilabel rollback --reason "bad labels in batch 2026-11-20"
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from configs.schema import load_config
from tasks.registry import RollbackResult, rollback_champion


@flow(name="rollback")
def rollback(
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    reason: str = "manual rollback",
) -> RollbackResult:
    """Roll the champion back to the previous passing version, recording `reason`.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file.
        reason: why; stored as a tag on the version rolled back from.
    """
    cfg = load_config(config_path, overrides)
    return rollback_champion(cfg.mlflow.tracking_uri, cfg.mlflow.model_name, reason)


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(["rollback", *sys.argv[1:]]))
