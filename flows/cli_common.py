"""What every `semilabel` subcommand shares: `--config` and `--set`, a progress bar, a
printed summary, and exit codes. It knows command names, not flows: the flow to run is
passed in (by `flows.cli`, or by a flow module run as `python -m flows.<name>`).

Exit codes: 0 done; 1 the run failed (the message says why); 2 bad configuration;
3 `monitor --strict` could not vouch for the champion; 4 `monitor --fail-on-alert` found
a label-health breach.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from configs.schema import ConfigError, load_config, parse_set_args

console = Console(stderr=True)
# What we print is data (class names like "recall[eight]", paths, messages): never Rich
# markup, which would swallow anything in square brackets.
out = Console(markup=False)

EXIT_FAILED, EXIT_CONFIG, EXIT_NOT_VERIFIED, EXIT_HEALTH_ALERT = 1, 2, 3, 4

# Options beyond --config/--set, by command: (flags, argparse keywords); the option's
# dest is the flow's keyword argument.
OPTIONS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "rollback": [
        (("--reason",), {"default": "manual rollback", "help": "recorded on the version"}),
    ],
    "annotate": [
        (
            ("action",),
            {
                "choices": ["export", "import", "push", "pull"],
                "help": "export open requests as files; import a Label Studio JSON export or "
                "a CSV; push open requests to Label Studio; pull its annotations",
            },
        ),
        (("--file",), {"default": None, "help": "import: the .json export or .csv to read"}),
    ],
    "monitor": [
        (
            ("--strict",),
            {
                "action": "store_true",
                "help": "fail (exit 3; a Failed flow run under Prefect) unless the champion "
                "was checked and found ok: for schedulers and alerting",
            },
        ),
        (
            ("--fail-on-alert",),
            {
                "action": "store_true",
                "help": "fail (exit 4) when a label SLI breaches its threshold",
            },
        ),
    ],
}


# Options that are config overrides under another name: (flag, dotted key, help).
AS_OF = (
    "--as-of",
    "train.as_of",
    "time travel: train on the store as it was then (ISO 8601, e.g. 2026-11-01T00:00Z)",
)
OVERRIDE_OPTIONS: dict[str, list[tuple[str, str, str]]] = {"train": [AS_OF], "retrain": [AS_OF]}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config (default: the embedded configs/default.yaml)",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="sets",
        help="override a config key, e.g. --set source.kind=image_folder (repeatable)",
    )
    for flags, kwargs in OPTIONS.get(command, []):
        parser.add_argument(*flags, **kwargs)
    for flag, key, help_text in OVERRIDE_OPTIONS.get(command, []):
        parser.add_argument(
            flag, default=None, metavar="VALUE", help=f"{help_text} (= --set {key}=...)"
        )


def _print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for row in rows:
        value = row["value"]
        # numbers line up on the right; sentences (a reason, a next step) read from the left
        cell = Text(str(value), justify="right") if isinstance(value, int | float) else str(value)
        table.add_row(str(row["metric"]), cell)
    out.print(table)


def present(command: str, result: Any) -> None:
    """Print a flow's result for a person."""
    from tasks.validation import MonitorReport
    from tasks.validation.reports import monitor_markdown

    if isinstance(result, MonitorReport):
        out.print(monitor_markdown(result), soft_wrap=True)
        return
    if command == "rollback":
        out.print(
            f"rolled back {result.model_name}: champion v{result.from_version} -> "
            f"v{result.to_version} ({result.reason})"
        )
        return
    if hasattr(result, "table") and getattr(result, "functions", None):
        table = Table(title="labeling functions")
        rows = result.table()
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        out.print(table)
    title = {
        "ingest": f"ingest: {getattr(result, 'source', '')}",
        "retrain": f"retrain: {getattr(result, 'decision', '')}",
    }.get(command, command)
    _print_rows(title, result.rows())
    if getattr(result, "run_url", ""):  # whole, so a terminal can open it
        out.print(f"Review it in the MLflow UI: {result.run_url}", soft_wrap=True)


def explain(exc: BaseException) -> str:
    """The error for a person: Prefect's own start-up failure gets what to change."""
    text = str(exc)
    if "Timed out while attempting to connect to ephemeral Prefect API server" in text:
        import os

        from flows import PREFECT_START_TIMEOUT_ENV, START_TIMEOUT_ENV

        waited = os.environ.get(PREFECT_START_TIMEOUT_ENV, "?")
        return (
            f"Prefect's temporary API server did not start within {waited} s (a busy "
            f"machine starts it slowly). Give it longer, e.g. `export {START_TIMEOUT_ENV}"
            f"=900` (or Prefect's own {PREFECT_START_TIMEOUT_ENV}), or start a server once "
            "(`prefect server start`) and point semilabel at it with `export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api`. Prefect said: " + text.split(" stdout:")[0]
        )
    return text


def execute(command: str, flow: Callable[..., Any], args: argparse.Namespace) -> int:
    """Validate the config, run `flow` with a progress bar, print its result."""
    try:
        overrides = parse_set_args(args.sets)
        for flag, key, _ in OVERRIDE_OPTIONS.get(command, []):
            value = getattr(args, flag.lstrip("-").replace("-", "_"))
            if value is not None:
                overrides[key] = value
        load_config(args.config, overrides)  # fail fast, before Prefect starts
    except ConfigError as exc:
        console.print(f"[red]semilabel {command}: {escape(str(exc))}[/red]", highlight=False)
        return EXIT_CONFIG
    dests = [flags[0].lstrip("-").replace("-", "_") for flags, _ in OPTIONS.get(command, [])]
    extra = {dest: getattr(args, dest) for dest in dests}

    from tasks.progress import set_listener
    from tasks.registry.monitoring import ChampionNotVerified
    from tasks.slis import LabelHealthAlert

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
            result = flow(config_path=args.config, overrides=overrides, **extra)
        except ChampionNotVerified as exc:
            present(command, exc.report)
            console.print(f"[red]semilabel {command}: {escape(str(exc))}[/red]", highlight=False)
            return EXIT_NOT_VERIFIED
        except LabelHealthAlert as exc:
            out.print(exc.health.markdown(), soft_wrap=True)
            console.print(f"[red]semilabel {command}: {escape(str(exc))}[/red]", highlight=False)
            return EXIT_HEALTH_ALERT
        except Exception as exc:  # noqa: BLE001 - the CLI's job is to report, then exit 1
            console.print(
                f"[red]semilabel {command} failed: {escape(explain(exc))}[/red]", highlight=False
            )
            return EXIT_FAILED
        finally:
            set_listener(None)
    present(command, result)
    return 0


def run_command(command: str, flow: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    """`python -m flows.<name>`: the same command line as `semilabel <name>`."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{command.replace('-', '_')}")
    add_arguments(parser, command)
    return execute(command, flow, parser.parse_args(argv))
