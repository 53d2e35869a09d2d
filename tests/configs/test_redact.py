"""Config values as they may be shown: credentials in URLs and secret-named values are
masked; everything else reads as it was."""

import pytest

from configs.redact import redact, redact_text, without_credentials
from configs.schema import load_config


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("s3://AKIA:SECRET@bucket/prefix", "s3://AKIA:***@bucket/prefix"),
        # an S3 secret key holds unencoded slashes: all of it goes
        ("s3://AKIA:abc/def+ghi@bucket/prefix", "s3://AKIA:***@bucket/prefix"),
        ("postgresql://mlflow:p@ss@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        (
            "postgresql+psycopg://u:pw@db/x?sslmode=require",
            "postgresql+psycopg://u:***@db/x?sslmode=require",
        ),
        ("https://ghp_TOKEN@github.com/org/repo", "https://***@github.com/org/repo"),
        ("http://:pw@host:9091", "http://***@host:9091"),
        (
            "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&x=1",
            "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1",
        ),
        ("http://gw:9091/?token=abc#top", "http://gw:9091/?token=***#top"),
        ("host=db user=me password=hunter2", "host=db user=me password=***"),
        # unchanged: no credential
        ("sqlite:///.semilabel/mlflow.db", "sqlite:///.semilabel/mlflow.db"),
        ("http://127.0.0.1:5000/path@v1", "http://127.0.0.1:5000/path@v1"),
        ("s3://bucket/a:b/c@d", "s3://bucket/a:b/c@d"),
        (
            "s3://bucket/p?endpoint_override=h:9000&scheme=http",
            "s3://bucket/p?endpoint_override=h:9000&scheme=http",
        ),
        (
            "--set 'label_studio.token_env=LS_TOKEN' --set train.lr=0.1",
            "--set 'label_studio.token_env=LS_TOKEN' --set train.lr=0.1",
        ),
        ("models:/semilabel-classifier@champion", "models:/semilabel-classifier@champion"),
        ("label_studio:alice@example.com", "label_studio:alice@example.com"),
    ],
)
def test_credentials_are_masked_and_nothing_else(given, shown):
    assert redact_text(given) == shown
    assert redact_text(shown) == shown  # masking twice changes nothing


def test_urls_inside_prose_and_commands_are_masked():
    text = (
        "Run `semilabel retrain --set 'store.root=s3://K:S3CRET@b/p'` then open "
        "http://u:PW@ui:5000/#/runs/1."
    )
    out = redact_text(text)
    assert "S3CRET" not in out and "PW" not in out
    assert "'store.root=s3://K:***@b/p'" in out and "http://u:***@ui:5000/#/runs/1." in out


def test_a_whole_config_is_masked_where_it_holds_credentials_only():
    cfg = load_config(
        overrides={
            "store.root": "s3://KEY:STORE-SECRET@bucket/store",
            "mlflow.tracking_uri": "postgresql://mlflow:DB-SECRET@db/mlflow",
            "metrics.pushgateway_url": "http://push:PUSH-SECRET@gw:9091?token=TOKEN-SECRET",
        }
    )
    data = cfg.model_dump(mode="json")
    shown = redact(data)
    text = repr(shown)
    for secret in ("STORE-SECRET", "DB-SECRET", "PUSH-SECRET", "TOKEN-SECRET"):
        assert secret not in text
    assert shown["store"]["root"] == "s3://KEY:***@bucket/store"
    assert shown["metrics"]["pushgateway_url"] == "http://push:***@gw:9091?token=***"
    # the rest as it was, types included
    assert {k: v for k, v in shown.items() if k not in ("store", "mlflow", "metrics")} == {
        k: v for k, v in data.items() if k not in ("store", "mlflow", "metrics")
    }


def test_a_link_carries_no_user_info_at_all():
    assert without_credentials("http://u:pw@mlflow:5000") == "http://mlflow:5000"
    assert without_credentials("https://TOKEN@host/x?sig=1") == "https://host/x?sig=***"
    assert without_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
