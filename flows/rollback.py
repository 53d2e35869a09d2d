"""The rollback flow: move `champion` back to the previous passing version.

semilabel rollback --reason "bad labels in batch 2026-11-20"
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import load_config
from tasks.registry import RegistryRef, RollbackResult, registry_lock
from tasks.registry.monitoring import roll_back_champion


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
    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    with registry_lock(ref, cfg.store.root, cfg.mlflow.registry_lock_timeout_s) as lease:
        return roll_back_champion(ref, reason, lease)


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("rollback", rollback))
