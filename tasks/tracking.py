"""How semilabel uses MLflow tracking, in one place: where artifacts live, the experiment,
the names metrics are grouped under, the params worth a column, the datasets a run
read, and the link to a run in the UI.

Artifacts of the local default (`sqlite:///.semilabel/mlflow.db`) live next to the
database, in `.semilabel/artifacts/`, not in a `./mlruns` of whatever folder a command
ran from: the home is self-contained and can be moved. `mlflow.artifact_root` (a folder
or `s3://...`) overrides it; a tracking server's own default applies to `http(s)://`
URIs. An experiment keeps the location it was created with.

Nothing logged here carries a credential: config values pass through
`configs.redact` (a store root `s3://KEY:SECRET@...` is logged as `s3://KEY:***@...`).
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from configs.redact import redact, without_credentials

# the training loop's row keys -> the names runs show them under
LOOP_METRICS = {
    "loss": "train/loss",
    "loss_sup": "train/loss_sup",
    "loss_unsup": "train/loss_unsup",
    "mask_rate": "train/mask_rate",
    "lr": "train/lr",
    "loss_fairness": "train/loss_fairness",
    "pseudo_labeling_off": "train/pseudo_labeling_off",
    # step 0: how the run started (models.train.start)
    "start_seeded": "train/start_seeded",
    "smallest_class_labels": "train/smallest_class_labels",
    "pretrain_loss": "train/pretrain_loss",
    "seeded_labels": "train/seeded_labels",
    "eval_teacher_accuracy": "eval_gold/teacher_accuracy",
    "eval_student_accuracy": "eval_gold/student_accuracy",
    "eval_pseudo_label_precision": "eval_gold/pseudo_label_precision",
    "eval_pseudo_label_coverage": "eval_gold/pseudo_label_coverage",
    "eval_pseudo_label_count": "eval_gold/pseudo_label_count",
}
# The run's params: the config keys that change the trained model, and only those, so
# that runs compare on them in the UI. An entry is a key or a section (every key under
# it, less NOT_MODEL_PARAMS). Everything else is in the run's `config.json`: the stores,
# ingest, MLflow, sampling and monitoring; and gate.*, which judges the trained model
# and does not change it (its thresholds are in the gate report).
MODEL_PARAMS = (
    "seed",  # every random draw: init, batches, augmentations
    "taxonomy.classes",  # the outputs and their order
    "gold",  # which examples are held out of training; the dev part the guard judges on
    "labels.confidence_floor",  # which weak labels become training labels
    "labels.max_model_share",
    "train",
    "health.guard_margin",  # the guard that restarts the student from the teacher
    "health.guard_warmup_steps",
)
WEAK_LABELING_PARAMS = "weak_labeling"  # when it runs: its labels are training data
# Keys under those that only change where, how fast or how visibly it trains; why each:
NOT_MODEL_PARAMS = {
    "train.device": "where it runs (the tag semilabel.device says where it ran)",
    "train.compile": "the same network, compiled for speed",
    "train.checkpoint_every": "how often a run can resume",
    "train.log_every": "how often the curves get a point",
    "train.run_dir": "a folder for checkpoints",
    "train.cache_dir": "a folder for decoded images",
    "train.pool_memory_mb": "the pool held in memory or read from the cache: the same rows",
    "train.distributed": "processes splitting one global batch (tag semilabel.world_size)",
    "weak_labeling.batch_rows": "rows per vectorized batch",
    "weak_labeling.shard_rows": "rows per parallel shard",
    "weak_labeling.runner": "where the shards run",
    "weak_labeling.workers": "how many shards run at once",
    "weak_labeling.dask_address": "which Dask cluster runs them",
}


def artifact_root(tracking_uri: str, configured: str | None) -> str | None:
    """Where a new experiment's artifacts go: the configured root, or a folder beside a
    local SQLite/file store; None (the server decides) for a tracking server."""
    if configured:
        return configured if "://" in configured else Path(configured).resolve().as_uri()
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = (
            Path(tracking_uri[len("sqlite:///") :])
            if tracking_uri.startswith("sqlite:///")
            else None
        )
        if db is not None and db.name:
            return (db.resolve().parent / "artifacts").as_uri()
    if parsed.scheme in ("", "file"):
        return (Path(parsed.path or tracking_uri).resolve() / "artifacts").as_uri()
    return None


def prepare_local_store(tracking_uri: str) -> None:
    """Create a local SQLite tracking store atomically: its tables are made in a temporary
    file that is renamed into place. MLflow creates them in place, one migration at a
    time, so a run killed meanwhile left a half-made database that no later run could
    open ("duplicate column name"). An existing store, or a server, is left alone."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    db = Path(tracking_uri[len("sqlite:///") :].split("?")[0])
    if not db.name or db.exists():
        return
    # absolute: MLflow keeps engines by URI, and a relative one made in another working
    # directory (a worker's earlier run) would point at the wrong file
    db = db.resolve()
    import os

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{tmp}", artifact_root(tracking_uri, None) or "")
    store.engine.dispose()
    if not db.exists():  # else another run made it meanwhile: use that one
        os.replace(tmp, db)
    tmp.unlink(missing_ok=True)


def ensure_experiment(tracking_uri: str, name: str, configured_root: str | None = None) -> str:
    """The experiment's id; made (with its artifact location, see the module) if missing.
    Also makes it the active experiment."""
    import mlflow
    from mlflow.exceptions import MlflowException

    prepare_local_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            client.create_experiment(
                name, artifact_location=artifact_root(tracking_uri, configured_root)
            )
        except MlflowException as exc:  # made meanwhile by a concurrent run
            if "already exists" not in str(exc).lower():
                raise
    experiment = mlflow.set_experiment(name)
    return experiment.experiment_id


def code_version(path: Path = Path(__file__).parent) -> str:
    """The commit the code at `path` runs from, `<sha>-dirty` when tracked files differ
    from it (the commit alone would not rebuild this code); `unknown` outside a git
    checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=path
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "--short", "HEAD")
    if not sha:
        return "unknown"
    changes = git("status", "--porcelain", "--untracked-files=no")
    if changes is None:  # cannot tell: say so rather than vouch for a clean tree
        return f"{sha}-unverified"
    return f"{sha}-dirty" if changes else sha


def loop_metric_name(key: str, classes: tuple[str, ...]) -> str | None:
    """The grouped name of a training-loop metric; None for those not logged as curves."""
    if key in LOOP_METRICS:
        return LOOP_METRICS[key]
    if key.startswith("pseudo_labels_class_"):
        k = int(key.rsplit("_", 1)[1])
        return f"pseudo_labels/class_{classes[k] if k < len(classes) else k}"
    return None  # e.g. `phase`: a tag (semilabel.student_from_step), not a chart


def tidy(value: float) -> float:
    """A metric value as a person reads it: 6 significant digits, not 17."""
    return float(f"{value:.6g}")


def logged_config(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as runs record it (`config.json`, params): every value of
    `config`, the whole config as loaded (`Config.model_dump(mode="json")`), less
    credentials (`configs.redact`)."""
    return redact(config)


def model_params(config: dict[str, Any]) -> dict[str, str]:
    """The keys of `config` (the whole config, `Config.model_dump(mode="json")`) that
    change the trained model (`MODEL_PARAMS`, and `weak_labeling` when it runs, less
    `NOT_MODEL_PARAMS`) as MLflow params, without credentials. The whole config is the
    run's config.json (`logged_config`)."""
    data = logged_config(config)
    runs_weak_labeling = data[WEAK_LABELING_PARAMS]["enabled"]
    roots = MODEL_PARAMS + ((WEAK_LABELING_PARAMS,) if runs_weak_labeling else ())
    out: dict[str, str] = {}
    for root in roots:
        node = data
        for part in root.split("."):
            node = node[part]
        for key, value in _flatten(root, node).items():
            if not any(key == k or key.startswith(f"{k}.") for k in NOT_MODEL_PARAMS):
                out[key] = str(value)[:500]
    return out


def _flatten(prefix: str, obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: obj}


def snapshot_dataset(store_uri: str, snapshot_id: str, name: str) -> Any:
    """An MLflow dataset for a store snapshot: digest = the snapshot id, source = the
    store (without its options or credentials), and the schema of what was read
    (example id, encoded image, label)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.schema import ColSpec, Schema

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": same class
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(redact(store_uri.split("?")[0]))
    schema = Schema(
        [ColSpec("string", "example_id"), ColSpec("binary", "image"), ColSpec("string", "label")]
    )
    return MetaDataset(source, name=name, digest=snapshot_id, schema=schema)


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, in its model-training view."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    return f"{ui_url.rstrip('/')}/{page}?workflowType=machine_learning"


def ui_base(tracking_uri: str, ui_url: str) -> str:
    """The MLflow UI for a tracking URI: the server itself for http(s), else `ui_url`
    (where `mlflow ui` on the local store serves); a link, so without credentials."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else ui_url
    return without_credentials(base)
