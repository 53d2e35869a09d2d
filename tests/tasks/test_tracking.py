"""How runs are tracked: which config keys become a run's params."""

from configs.schema import load_config
from tasks.tracking import NOT_MODEL_PARAMS, model_params


def test_params_are_the_keys_that_change_the_model_and_only_those():
    cfg = load_config(overrides={"weak_labeling.enabled": True})
    params = model_params(cfg)
    # what changes the trained model: data selection, seeds, schedule, the guard, weak labels
    for key in (
        "seed",
        "taxonomy.classes",
        "gold.salt",
        "labels.confidence_floor",
        "train.lr",
        "train.augment.n_ops",
        "train.eval_every",  # when the guard can switch pseudo-labeling off
        "health.pseudo_label_precision_floor",
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
    assert not any(k.startswith("weak_labeling.") for k in model_params(load_config()))


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
    params = model_params(cfg)
    assert "LF-SECRET" not in repr(params) and "AK:***@bucket" in params["weak_labeling.functions"]
    assert "STORE-SECRET" not in repr(logged_config(cfg))
    source = snapshot_dataset(cfg.store.root, "snap", "training-snap").source.to_json()
    assert "STORE-SECRET" not in source and "bucket/store" in source
