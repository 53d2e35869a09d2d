"""Two retrains against production-style services: an MLflow tracking server on
PostgreSQL that proxies artifacts to S3 (a moto server), and a Prefect server.

The services are real processes on 127.0.0.1, made and stopped here: a throwaway
PostgreSQL cluster (Debian's `postgresql` package), `mlflow server` on it, and moto's
S3 server in this process. The client side (the flow) is given only the tracking URL:
no S3 endpoint and no AWS credentials, as a worker of a proxying server needs none.
"""

from __future__ import annotations

import glob
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pytest
import torch
from moto.server import ThreadedMotoServer
from PIL import Image

from flows.retrain import retrain
from tasks.registry.aliases import CHAMPION, TAG_GATE
from tasks.registry.model_format import SPEC_FILE, WEIGHTS_FILE, load_classifier
from tests.conftest import digit_folder, digit_png, tiny_run_overrides

pytestmark = pytest.mark.slow

BUCKET = "semilabel-mlflow"
PREFIX = "artifacts"  # the server's --artifacts-destination is s3://BUCKET/PREFIX
DB_USER = "mlflow"
DB_PASSWORD = "semilabel-test"
DB_NAME = "mlflow"
MODEL = "prod-classifier"
S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SERVER_START_TIMEOUT_S = 180.0  # migrations on a fresh database, on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bindir() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<ver>/bin."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: tuple(int(n) for n in p.split("/")[4].split(".")),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _tail(path: Path, n_chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-n_chars:] if path.exists() else "(no log)"


@dataclass(frozen=True)
class Postgres:
    uri: str  # postgresql://user:password@127.0.0.1:port/db, as libpq and psycopg read it

    @property
    def sqlalchemy_uri(self) -> str:
        """The URI for MLflow: the driver named, as plain `postgresql://` means psycopg2
        to SQLAlchemy 2.0 and psycopg 3 to SQLAlchemy 2.1."""
        return self.uri.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (free port), password auth over TCP,
    its unix socket in its own folder; stopped and deleted at the end.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
    user (or `nobody`), in a folder outside pytest's root-only tmp tree."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install -y postgresql")
    pytest.importorskip(  # ImportError too: psycopg without a libpq to load
        "psycopg",
        reason="the PostgreSQL driver is missing: pip install 'psycopg[binary]'",
        exc_type=ImportError,
    )
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _has_user("postgres") else "nobody"
    home = Path(tempfile.mkdtemp(prefix="semilabel-pg-"))  # short: a socket path is <108
    data, log_file, pwfile = home / "data", home / "postgres.log", home / "pwfile"
    pwfile.write_text(DB_PASSWORD + "\n")
    if user:
        entry = pwd.getpwnam(user)
        for p in (home, pwfile):
            os.chown(p, entry.pw_uid, entry.pw_gid)

    def pg(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_user(user, [str(bindir / argv[0]), *argv[1:]]),
            cwd=home,  # the unprivileged user may not read ours
            capture_output=True,
            text=True,
            timeout=120,
        )

    def check(done: subprocess.CompletedProcess[str]) -> None:
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(done.args)} failed ({done.returncode}):\n{done.stdout}\n"
                f"{done.stderr}\n{_tail(log_file)}"
            )

    port = _free_port()
    started = False
    try:
        check(
            pg(
                "initdb",
                "-D",
                str(data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",  # the socket is in a folder only `user` can enter
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {home} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # throwaway
        )
        started = True  # from here on, stop it whatever happens
        check(
            pg(
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(log_file),
                "-w",
                "-t",
                "90",
                "-o",
                options,
                "start",
            )
        )
        check(pg("createdb", "-h", str(home), "-p", str(port), "-U", DB_USER, DB_NAME))
        yield Postgres(f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{port}/{DB_NAME}")
    finally:
        if started:
            stopped = pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
            if stopped.returncode != 0 and (data / "postmaster.pid").exists():
                pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, object]]:
    """A moto S3 server on 127.0.0.1 (free port) with the artifact bucket: its endpoint
    URL and a boto3 client given the dummy credentials directly (not through this
    process's environment, which the flow shares)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", **S3_CREDENTIALS
        )
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tracking_server(postgres: Postgres, s3, tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on PostgreSQL, proxying artifacts to s3://BUCKET/PREFIX; its URL.
    Only the server gets the S3 endpoint and credentials."""
    endpoint, _ = s3
    port = _free_port()
    log_file = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(key, None)
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        postgres.sqlalchemy_uri,
        "--artifacts-destination",
        f"s3://{BUCKET}/{PREFIX}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # 2 cores
    ]
    url = f"http://127.0.0.1:{port}"
    with log_file.open("w") as log:
        # its own process group: the server forks a uvicorn worker, stopped with it
        server = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(url, server, log_file)
        yield url
    finally:
        _stop_group(server)
        # no later test may talk to it (a dead server is retried for minutes)
        if os.environ.get("MLFLOW_TRACKING_URI") == url:
            mlflow.set_tracking_uri(None)  # unsets the variable too
        if os.environ.get("MLFLOW_REGISTRY_URI") == url:
            mlflow.set_registry_uri(None)
            del os.environ["MLFLOW_REGISTRY_URI"]  # which set_registry_uri(None) leaves


def _wait_healthy(url: str, server: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({server.returncode}):\n{_tail(log_file)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"mlflow server not healthy after {SERVER_START_TIMEOUT_S:.0f}s:\n{_tail(log_file)}"
    )


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _s3_prefix(artifact_uri: str) -> str:
    """The bucket key prefix a proxied `mlflow-artifacts:/...` URI is stored under."""
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    return f"{PREFIX}/{artifact_uri[len('mlflow-artifacts:/') :].strip('/')}/"


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}


def test_two_retrains_on_postgres_and_s3_register_promote_and_load_back(
    prefect_api, tracking_server, postgres, s3, tmp_path, monkeypatch
):
    import psycopg

    _, s3_client = s3
    for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud for keys
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ov = {
        **tiny_run_overrides(tmp_path, digit_folder(tmp_path / "images"), tracking_server),
        "mlflow.model_name": MODEL,
        "gate.min_gold_labels": 20,
    }

    first = retrain(overrides=ov)
    second = retrain(overrides=ov)

    client = mlflow.MlflowClient(tracking_uri=tracking_server, registry_uri=tracking_server)
    # the registry: two versions, each with its gate verdict; the first one promoted
    versions = {v.version: v for v in client.search_model_versions(f"name='{MODEL}'")}
    assert set(versions) == {"1", "2"}
    assert (first.version, first.promoted, first.champion_version) == ("1", True, "1")
    for v in versions.values():
        assert v.tags[TAG_GATE] in ("passed", "rejected", "undecided") and v.tags.get(
            "gate.accuracy"
        )
    assert versions["1"].tags[TAG_GATE] == "passed"
    assert versions[second.version].tags[TAG_GATE] == second.gate
    champion = client.get_model_version_by_alias(MODEL, CHAMPION)
    assert champion.version == second.champion_version
    assert second.run_url.startswith(f"{tracking_server}/#/experiments/")

    # artifacts: proxied by the server, stored in the bucket
    for decision in (first, second):
        run = client.get_run(decision.mlflow_run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        run_keys = _keys(s3_client, _s3_prefix(run.info.artifact_uri))
        assert {"gate/gate_report.json", "gate/gate_checks.png"} <= run_keys, run_keys
    model_uri = client.get_model_version_download_uri(MODEL, champion.version)
    model_prefix = _s3_prefix(model_uri)
    model_keys = _keys(s3_client, model_prefix)
    assert {
        "MLmodel",
        f"data/classifier/{SPEC_FILE}",
        f"data/classifier/{WEIGHTS_FILE}",
    } <= model_keys, model_keys
    assert not (work / "mlruns").exists() and not (work / "mlartifacts").exists()

    # the metadata: in PostgreSQL
    experiment = client.get_experiment(client.get_run(first.mlflow_run_id).info.experiment_id)
    with psycopg.connect(postgres.uri) as conn, conn.cursor() as cur:
        cur.execute(
            "select r.run_uuid from runs r join experiments e using (experiment_id)"
            " where e.name = %s",
            (experiment.name,),
        )
        in_db = {row[0] for row in cur.fetchall()}
        assert {first.mlflow_run_id, second.mlflow_run_id} <= in_db
        cur.execute("select count(*) from runs")
        assert cur.fetchone()[0] == len(client.search_runs([experiment.experiment_id]))
        cur.execute("select count(*) from model_versions where name = %s", (MODEL,))
        assert cur.fetchone()[0] == 2
        cur.execute(
            "select version from registered_model_aliases where name = %s and alias = %s",
            (MODEL, CHAMPION),
        )
        assert cur.fetchone() == (int(champion.version),)

    # the champion loads back through the server: the very weights in the bucket, and
    # it classifies fresh images
    classifier = load_classifier(f"models:/{MODEL}@{CHAMPION}", tracking_server)
    stored = s3_client.get_object(
        Bucket=BUCKET, Key=f"{model_prefix}data/classifier/{WEIGHTS_FILE}"
    )["Body"].read()
    weights = torch.load(io.BytesIO(stored), map_location="cpu", weights_only=True)
    loaded = classifier.state_dict()
    assert weights.keys() == loaded.keys()
    assert all(torch.equal(weights[k], loaded[k]) for k in weights)
    labels = [i % 3 for i in range(30)]
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(digit_png(c, 10_000 + i)))) for i, c in enumerate(labels)]
    )  # (B, H, W) uint8
    x = torch.from_numpy(images).float().div(255.0).unsqueeze(1)  # (B, 1, H, W)
    with torch.no_grad():
        predicted = classifier(x).argmax(1).tolist()
    assert np.mean(np.array(predicted) == np.array(labels)) >= 0.8
