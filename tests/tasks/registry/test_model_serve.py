"""The champion served by `mlflow models serve`, for real: a JSON request holding one 8-bit
image of any size gets the label the in-process pyfunc gives it; 0-255 floats are refused
with a message saying what to send."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from models import ClassifierConfig, build_classifier
from tasks.registry.model_format import log_classifier
from tasks.tracking import ensure_experiment

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests, and its mlflow
CLASSES = ("cat", "dog", "owl")
START_TIMEOUT_S = 180  # the scoring server imports torch and mlflow on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_until_up(server: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"mlflow models serve exited with {server.returncode}:\n{log_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # refused until uvicorn listens
            pass
        time.sleep(1)
    pytest.fail(f"no answer on {url}/ping after {START_TIMEOUT_S} s:\n{log_path.read_text()}")


def _stop(server: subprocess.Popen) -> None:
    """The server and the uvicorn it started (its own session, so its own group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.slow
def test_the_served_champion_labels_a_json_image_as_the_pyfunc_does(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    ensure_experiment(uri, "serve-test")
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig("small_cnn", 3, 3, 28, (0.5,) * 3, (0.25,) * 3))
    with mlflow.start_run():
        model_uri = log_classifier(model, CLASSES, torch.zeros(1, 3, 28, 28, dtype=torch.uint8))
    version = mlflow.register_model(model_uri, "served")
    mlflow.MlflowClient().set_registered_model_alias("served", "champion", version.version)

    image = np.random.default_rng(0).integers(0, 256, (1, 41, 33, 3), dtype=np.uint8)
    expected = mlflow.pyfunc.load_model("models:/served@champion").predict(image)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # its uvicorn
    }
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/served@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_up(server, url, log_path)
        (row,) = _post(f"{url}/invocations", {"inputs": image.tolist()})["predictions"]
        assert row["label"] == expected["label"][0]
        got = [row[name] for name in CLASSES]
        np.testing.assert_allclose(got, expected.loc[0, list(CLASSES)].to_numpy(), atol=1e-6)
        # floats in [0, 1] are the same pixels; 0-255 floats are refused, saying why
        (row,) = _post(f"{url}/invocations", {"inputs": (image / 255).tolist()})["predictions"]
        assert row["label"] == expected["label"][0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"{url}/invocations", {"inputs": image.astype(float).tolist()})
        assert refused.value.code == 400
        body = refused.value.read().decode()
        assert "float64 values from" in body and "uint8 images 0-255" in body, body
    finally:
        _stop(server)
