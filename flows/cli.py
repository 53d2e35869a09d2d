"""`semilabel`: one subcommand per flow, and the only module that knows every flow.

Every subcommand takes `--config FILE` (default: the embedded configs/default.yaml)
and repeatable `--set dotted.key=value`, runs the Prefect flow of the same name
(without a server unless PREFECT_API_URL is set), prints a short summary and exits
non-zero on failure (see `flows.cli_common` for the codes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flows.cli_common import add_arguments, execute

COMMANDS: dict[str, str] = {
    "ingest": "ingest images and labels from the configured source into the store",
    "train": "train teacher and student on the store's data; log to MLflow",
    "weak-label": "apply labeling functions and write label-model labels",
    "sample": "choose what people should label next and hand it over (sampling.mode)",
    "annotate": "move annotation requests and answers: export | import | push | pull",
    "retrain": "ingest, train, gate on gold, register, promote or reject",
    "monitor": "re-check the champion on current gold; roll back on regression",
    "rollback": "move the champion alias back to the previous passing version",
}


def load_flow(command: str) -> Callable[..., Any]:
    """The flow behind `command`, imported only when it runs (so `--help` and config
    errors answer without loading Prefect)."""
    if command == "ingest":
        from flows.ingest import ingest as flow
    elif command == "train":
        from flows.train import train as flow
    elif command == "weak-label":
        from flows.weak_label import weak_label as flow
    elif command == "sample":
        from flows.sample import sample as flow
    elif command == "annotate":
        from flows.annotate import annotate as flow
    elif command == "retrain":
        from flows.retrain import retrain as flow
    elif command == "monitor":
        from flows.monitor import monitor as flow
    elif command == "rollback":
        from flows.rollback import rollback as flow
    else:
        raise KeyError(command)
    return flow


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="semilabel",
        description="Turn semi-labeled data into better models: one subcommand per flow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text), name)
    args = parser.parse_args(argv)
    return execute(args.command, lambda **kw: load_flow(args.command)(**kw), args)


if __name__ == "__main__":
    sys.exit(main())
