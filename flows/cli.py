"""`semilabel`: one subcommand per flow.

Every subcommand takes `--config FILE` (default: the embedded configs/default.yaml)
and repeatable `--set dotted.key=value`, runs the Prefect flow of the same name
(without a server unless PREFECT_API_URL is set), prints a short summary and exits
non-zero on failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.schema import ConfigError, load_config, parse_set_args

console = Console(stderr=True)
out = Console()


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config (default: the embedded configs/default.yaml)",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="sets",
        help="override a config key, e.g. --set source.kind=image_folder (repeatable)",
    )
    return p


def _print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(str(row["metric"]), str(row["value"]))
    out.print(table)


def _run_ingest(config: str | None, overrides: dict[str, Any]) -> int:
    from flows.ingest import ingest

    summary = ingest(config_path=config, overrides=overrides)
    _print_rows(f"ingest: {summary.source}", summary.rows())
    return 0


def _run_train(config: str | None, overrides: dict[str, Any]) -> int:
    from flows.train import train

    summary = train(config_path=config, overrides=overrides)
    _print_rows("train", summary.rows())
    return 0


def _run_retrain(config: str | None, overrides: dict[str, Any]) -> int:
    from flows.retrain import retrain

    decision = retrain(config_path=config, overrides=overrides)
    _print_rows(f"retrain: {decision.decision}", decision.rows())
    return 0


def _run_monitor(config: str | None, overrides: dict[str, Any]) -> int:
    from flows.monitor import monitor

    report = monitor(config_path=config, overrides=overrides)
    out.print(report.to_markdown())
    return 0


def _run_rollback(config: str | None, overrides: dict[str, Any], reason: str) -> int:
    from flows.rollback import rollback

    result = rollback(config_path=config, overrides=overrides, reason=reason)
    out.print(
        f"rolled back {result.model_name}: champion v{result.from_version} -> "
        f"v{result.to_version} ({result.reason})"
    )
    return 0


def _run_weak_label(config: str | None, overrides: dict[str, Any]) -> int:
    from flows.weak_label import weak_label

    summary = weak_label(config_path=config, overrides=overrides)
    table = Table(title="labeling functions")
    for col in summary.table()[0] if summary.functions else ():
        table.add_column(col)
    for row in summary.table():
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)
    _print_rows("weak-label", summary.rows())
    return 0


COMMANDS: dict[str, tuple[str, Callable[..., int]]] = {
    "ingest": ("ingest images and labels from the configured source into the store", _run_ingest),
    "train": ("train teacher and student on the store's data; log to MLflow", _run_train),
    "weak-label": ("apply labeling functions and write label-model labels", _run_weak_label),
    "retrain": ("ingest, train, gate on gold, register, promote or reject", _run_retrain),
    "monitor": ("re-check the champion on current gold; roll back on regression", _run_monitor),
    "rollback": ("move the champion alias back to the previous passing version", _run_rollback),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semilabel", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, parents=[_common()], help=help_text, description=help_text)
        if name == "rollback":
            p.add_argument("--reason", default="manual rollback", help="recorded on the version")
    args = parser.parse_args(argv)

    try:
        overrides = parse_set_args(args.sets)
        load_config(args.config, overrides)  # fail fast, before Prefect starts
    except ConfigError as exc:
        console.print(f"[red]semilabel {args.command}: {exc}[/red]", highlight=False)
        return 2

    from tasks.progress import set_listener

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bars: dict[str, Any] = {}

        def on_progress(stage: str, done: int, total: int | None) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=done, total=total)

        set_listener(on_progress)
        try:
            extra = (args.reason,) if args.command == "rollback" else ()
            return COMMANDS[args.command][1](args.config, overrides, *extra)
        except Exception as exc:  # noqa: BLE001 - the CLI's job is to report, then exit 1
            console.print(f"[red]semilabel {args.command} failed: {exc}[/red]", highlight=False)
            return 1
        finally:
            set_listener(None)


if __name__ == "__main__":
    sys.exit(main())
