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
from pathlib import Path
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
METRICS_HELP = "label-health metrics for Prometheus: serve them (scrape), or write a .prom file"
INIT_HELP = "look at your images (a folder or a manifest) and write a first config for them"
LINEAGE_HELP = "what trained a registered model: its data snapshot, label sources, gold, code"
LABELS_HELP = "export the labels the next training reads (or read then, --as-of) to a file"


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
    metrics = sub.add_parser("metrics", help=METRICS_HELP, description=METRICS_HELP)
    add_arguments(metrics, "metrics")
    metrics.add_argument("action", choices=["serve", "write"])
    metrics.add_argument("--host", default="127.0.0.1", help="serve: address to listen on")
    metrics.add_argument("--port", type=int, default=9464, help="serve: port (default 9464)")
    metrics.add_argument("--file", default=None, help="write: the .prom file to write")
    lineage = sub.add_parser("lineage", help=LINEAGE_HELP, description=LINEAGE_HELP)
    add_arguments(lineage, "lineage")
    lineage.add_argument("model", help="models:/<name>/<version> or models:/<name>@<alias>")
    lineage.add_argument("--json", action="store_true", help="print JSON for machines")
    labels = sub.add_parser("labels", help=LABELS_HELP, description=LABELS_HELP)
    add_arguments(labels, "labels")
    labels.add_argument("action", choices=["export"])
    labels.add_argument(
        "--out", required=True, metavar="FILE", help="the file to write: .parquet or .csv"
    )
    labels.add_argument(
        "--as-of",
        default=None,
        metavar="VALUE",
        help="the labels training read then (ISO 8601, e.g. 2026-11-01T00:00Z; "
        "= --set train.as_of=...)",
    )
    init = sub.add_parser("init", help=INIT_HELP, description=INIT_HELP)
    init.add_argument(
        "path",
        help="an image folder (PATH/<class>/..., PATH/unlabeled/) or a "
        "manifest (.csv or .parquet with path and label columns)",
    )
    init.add_argument(
        "--out", required=True, metavar="FILE", help="the config to write (never overwritten)"
    )
    init.add_argument(
        "--name",
        default=None,
        help="names the store folder, the MLflow "
        "experiment and the model (default: the folder's name)",
    )
    init.add_argument("--path-column", default="path", help="manifest: the image path column")
    init.add_argument("--label-column", default="label", help="manifest: the label column")
    args = parser.parse_args(argv)
    if args.command == "init":
        return run_init(args)
    if args.command == "metrics":
        return run_metrics(args)
    if args.command == "lineage":
        return run_lineage(args)
    if args.command == "labels":
        return run_labels(args)
    return execute(args.command, lambda **kw: load_flow(args.command)(**kw), args)


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    """The validated config of a command that runs no flow, with `extra` overrides on top
    of --set; None (said why) if invalid."""
    from configs.schema import ConfigError, load_config, parse_set_args
    from flows.cli_common import console

    try:
        return load_config(args.config, {**parse_set_args(args.sets), **(extra or {})})
    except ConfigError as exc:
        console.print(f"[red]semilabel {args.command}: {exc}[/red]", highlight=False)
        return None


def run_init(args: argparse.Namespace) -> int:
    """`semilabel init PATH --out FILE`: survey the data, write a starter config."""
    import torch

    from configs.starter import write_starter
    from flows.cli_common import EXIT_CONFIG, EXIT_FAILED, console, out
    from tasks.ingest.sources import DataContractError
    from tasks.ingest.survey import choose, iter_lines, survey

    if Path(args.out).exists():
        console.print(
            f"[red]semilabel init: {args.out} already exists; init never overwrites a file: "
            "choose another --out or remove it[/red]",
            highlight=False,
        )
        return EXIT_CONFIG
    try:
        found = survey(args.path, path_column=args.path_column, label_column=args.label_column)
        choices = choose(found, gpu=torch.cuda.is_available(), name=args.name, out=args.out)
        write_starter(choices, args.out)
    except (DataContractError, FileExistsError, OSError) as exc:
        console.print(f"[red]semilabel init: {exc}[/red]", highlight=False)
        return EXIT_FAILED
    for line in iter_lines(found, choices, args.out):
        out.print(line, highlight=False, soft_wrap=True)
    return 0


def run_lineage(args: argparse.Namespace) -> int:
    """`semilabel lineage URI [--json]`: read the registry and the store, no flow run."""
    import json

    from flows.cli_common import EXIT_CONFIG, EXIT_FAILED, console, out
    from tasks.registry import LineageError, lineage
    from tasks.store import Store

    cfg = _config(args)
    if cfg is None:
        return EXIT_CONFIG
    try:
        trace = lineage(args.model, cfg.mlflow.tracking_uri, Store(cfg.store.root))
    except (LineageError, RuntimeError) as exc:
        console.print(f"[red]semilabel lineage: {exc}[/red]", highlight=False)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(trace.to_dict(), indent=2))
    else:
        out.print(trace.markdown(), soft_wrap=True)
    return 0


def run_labels(args: argparse.Namespace) -> int:
    """`semilabel labels export --out FILE [--as-of T]`: the resolved training labels
    written to a file, read from the store alone (no flow run)."""
    from rich.markup import escape

    from flows.cli_common import EXIT_CONFIG, EXIT_FAILED, console, out
    from tasks.store import Store, StoreError
    from tasks.store.export import ExportError, export_labels

    cfg = _config(args, {"train.as_of": args.as_of} if args.as_of else None)
    if cfg is None:
        return EXIT_CONFIG
    try:
        store = Store(cfg.store.root)
        done = export_labels(store, cfg.data_spec(), cfg.labels, args.out, as_of=cfg.train.as_of)
    except ExportError as exc:
        console.print(f"[red]semilabel labels export: {escape(str(exc))}[/red]", highlight=False)
        return EXIT_CONFIG
    except (StoreError, OSError) as exc:
        console.print(
            f"[red]semilabel labels export failed: {escape(str(exc))}[/red]", highlight=False
        )
        return EXIT_FAILED
    out.print(done.summary(), soft_wrap=True)
    return 0


def run_metrics(args: argparse.Namespace) -> int:
    """`semilabel metrics serve|write`: the store's latest SLIs, no flow run needed."""
    from flows.cli_common import EXIT_CONFIG, EXIT_FAILED, console, out
    from tasks.slis.prometheus import serve, write_textfile

    cfg = _config(args)
    if cfg is None:
        return EXIT_CONFIG
    if args.action == "write":
        if not args.file:
            console.print("[red]semilabel metrics write needs --file FILE (a .prom file)[/red]")
            return EXIT_CONFIG
        n = write_textfile(cfg.store.root, args.file)
        out.print(f"wrote {n} series to {args.file}")
        return 0
    out.print(
        f"serving label-health metrics on http://{args.host}:{args.port}/metrics (Ctrl-C stops)"
    )
    try:
        serve(cfg.store.root, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        console.print(f"[red]semilabel metrics serve: {exc}[/red]", highlight=False)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
