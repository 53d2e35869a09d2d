"""How runs are tracked: which config keys become a run's params, where artifacts live,
the local store, metric names and links to runs."""

from configs.schema import load_config
from tasks.tracking import NOT_MODEL_PARAMS, model_params


def test_params_are_the_keys_that_change_the_model_and_only_those():
    cfg = load_config(overrides={"weak_labeling.enabled": True})
    params = model_params(cfg.model_dump(mode="json"))
    # what changes the trained model: data selection, seeds, schedule, the guard, weak labels
    for key in (
        "seed",
        "taxonomy.classes",
        "gold.salt",
        "labels.confidence_floor",
        "train.lr",
        "train.augment.n_ops",
        "train.eval_every",  # when the guard can switch pseudo-labeling off
        "health.guard_margin",
        "weak_labeling.label_model",
        "weak_labeling.min_gold_covered",
    ):
        assert key in params, key
    # where, how fast or how visibly it trains; and the gate, which only judges the model
    left_out = [k for k in params if any(k == x or k.startswith(f"{x}.") for x in NOT_MODEL_PARAMS)]
    assert left_out == []
    for key in ("train.run_dir", "train.distributed.nproc_per_node", "weak_labeling.workers"):
        assert key not in params
    assert not any(k.startswith(("gate.", "store.", "mlflow.", "monitor.")) for k in params)
    # weak labeling's keys only when it runs
    default = load_config().model_dump(mode="json")
    assert not any(k.startswith("weak_labeling.") for k in model_params(default))


def test_every_excluded_key_exists_and_says_why():
    cfg = load_config(overrides={"weak_labeling.enabled": True})
    data = cfg.model_dump(mode="json")
    for key, why in NOT_MODEL_PARAMS.items():
        node = data
        for part in key.split("."):
            assert part in node, f"NOT_MODEL_PARAMS names {key!r}, not a config key"
            node = node[part]
        assert why


def _git(repo, *args: str) -> str:
    import subprocess

    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "HOME": str(repo),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_code_version_says_when_the_tree_had_uncommitted_changes(tmp_path):
    from tasks.tracking import code_version

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    sha = _git(repo, "rev-parse", "--short", "HEAD")
    assert code_version(repo / "pkg") == sha  # clean: the commit alone
    (repo / "pkg" / "mod.py").write_text("x = 2\n")  # a change the commit does not hold
    assert code_version(repo / "pkg") == f"{sha}-dirty"
    _git(repo, "commit", "-q", "-am", "second")
    assert code_version(repo / "pkg") == _git(repo, "rev-parse", "--short", "HEAD")
    assert code_version(tmp_path) == "unknown"  # not a git checkout


def test_params_and_the_dataset_source_carry_no_credentials():
    from tasks.tracking import logged_config, snapshot_dataset

    cfg = load_config(
        overrides={
            "weak_labeling.enabled": True,
            "weak_labeling.functions": [
                {"name": "ext", "kind": "external", "path": "s3://AK:LF-SECRET@bucket/votes.csv"}
            ],
            "store.root": "s3://AK:STORE-SECRET@bucket/store?region=eu-west-1",
        }
    )
    params = model_params(cfg.model_dump(mode="json"))
    assert "LF-SECRET" not in repr(params) and "AK:***@bucket" in params["weak_labeling.functions"]
    assert "STORE-SECRET" not in repr(logged_config(cfg.model_dump(mode="json")))
    source = snapshot_dataset(cfg.store.root, "snap", "training-snap").source.to_json()
    assert "STORE-SECRET" not in source and "bucket/store" in source


def test_artifacts_live_beside_a_local_store_unless_configured(tmp_path, monkeypatch):
    from tasks.tracking import artifact_root

    monkeypatch.chdir(tmp_path)
    here = tmp_path.resolve()
    assert artifact_root("sqlite:///home/mlflow.db", None) == (here / "home/artifacts").as_uri()
    assert artifact_root(f"sqlite:///{here}/db/m.db", None) == (here / "db/artifacts").as_uri()
    assert artifact_root(str(here / "mlruns"), None) == (here / "mlruns/artifacts").as_uri()
    assert artifact_root("http://mlflow:5000", None) is None  # the server decides
    assert artifact_root("http://mlflow:5000", "s3://bucket/art") == "s3://bucket/art"
    assert artifact_root("sqlite:///m.db", "art") == (here / "art").as_uri()


def test_a_local_store_is_made_whole_or_left_alone(tmp_path):
    import sqlite3

    from tasks.tracking import prepare_local_store

    db = tmp_path / "home" / "mlflow.db"
    prepare_local_store(f"sqlite:///{db}")
    tables = {
        r[0]
        for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")
    }
    assert {"experiments", "runs", "metrics"} <= tables
    assert [p.name for p in db.parent.iterdir()] == ["mlflow.db"]  # no temporary file left
    before = db.stat().st_mtime_ns
    prepare_local_store(f"sqlite:///{db}")  # there already: untouched
    assert db.stat().st_mtime_ns == before
    prepare_local_store("http://mlflow:5000")  # a server: nothing to make


def test_loop_metrics_are_grouped_and_class_curves_named():
    from tasks.tracking import loop_metric_name, tidy

    classes = ("cat", "dog")
    assert loop_metric_name("loss", classes) == "train/loss"
    assert loop_metric_name("eval_teacher_accuracy", classes) == "eval_gold/teacher_accuracy"
    assert loop_metric_name("pseudo_labels_class_1", classes) == "pseudo_labels/class_dog"
    assert loop_metric_name("pseudo_labels_class_7", classes) == "pseudo_labels/class_7"
    assert loop_metric_name("phase", classes) is None
    assert tidy(0.123456789) == 0.123457 and tidy(12345678.9) == 12345700.0


def test_links_to_a_run_name_the_ui_without_credentials():
    from tasks.tracking import run_url, ui_base

    assert ui_base("sqlite:///m.db", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert ui_base("http://u:pw@mlflow:5000", "http://127.0.0.1:5000") == "http://mlflow:5000"
    assert run_url("http://mlflow:5000/", "3", "abc") == (
        "http://mlflow:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
