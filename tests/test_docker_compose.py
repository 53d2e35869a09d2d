"""docker-compose.yml (for users with Docker; no Docker here): the services agree with
each other and with what tests/flows/test_retrain_production.py runs for real."""

import re
from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_mlflow_runs_on_the_postgres_and_the_bucket_the_other_services_make():
    pg = SERVICES["postgres"]["environment"]
    mlflow_cmd = " ".join(SERVICES["mlflow"]["command"].split())
    backend = re.search(r"--backend-store-uri (\S+)", mlflow_cmd).group(1)
    assert backend == (
        f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )
    bucket = re.search(r"--artifacts-destination s3://([^/\s]+)/", mlflow_cmd).group(1)
    assert f"mc mb --ignore-existing local/{bucket}" in SERVICES["make-bucket"]["entrypoint"]
    minio = SERVICES["minio"]["environment"]
    env = SERVICES["mlflow"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "psycopg[binary]" in mlflow_cmd and "boto3" in mlflow_cmd


def test_published_ports_listen_on_localhost_only():
    ports = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert "127.0.0.1:5000:5000" in ports and "127.0.0.1:4200:4200" in ports
