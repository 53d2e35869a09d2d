"""The annotate flow: move annotation requests and answers between the store and people.

semilabel annotate export               # open requests -> Label Studio tasks JSON + CSV
semilabel annotate import --file F      # a Label Studio JSON export or a CSV of answers
semilabel annotate push                 # open requests -> the Label Studio project
semilabel annotate pull                 # the project's annotations -> human label events
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import Config, load_config
from tasks.annotation.answers import ImportSummary
from tasks.annotation.delivery import (
    AnnotationInputs,
    Delivery,
    export_open_requests,
    import_annotations,
    pull_annotations,
    push_open_requests,
)

ACTIONS = ("export", "import", "push", "pull")


@flow(name="annotate")
def annotate(
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    action: str = "export",
    file: str | None = None,
) -> Delivery | ImportSummary:
    """Export, import, push or pull annotations.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file.
        action: export | import | push | pull.
        file: import: the Label Studio JSON export or CSV to read.
    """
    if action not in ACTIONS:
        raise ValueError(f"annotate: unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    inputs = annotation_inputs(load_config(config_path, overrides))
    run_id = str(flow_run.id or "local")
    if action == "import":
        if not file:
            raise ValueError("annotate import needs --file (a Label Studio .json export or a .csv)")
        return import_annotations(inputs, file, run_id)
    if action == "export":
        return export_open_requests(inputs)
    if action == "push":
        return push_open_requests(inputs)
    return pull_annotations(inputs, run_id)


def annotation_inputs(cfg: Config) -> AnnotationInputs:
    """What annotation takes from the config (the sample and retrain flows' too)."""
    return AnnotationInputs(
        data=cfg.data_spec(),
        sampling=cfg.sampling,
        label_studio=cfg.label_studio,
        source=cfg.source,
    )


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("annotate", annotate))
