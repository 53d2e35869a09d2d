"""A real Label Studio on 127.0.0.1 for the round-trip tests: one server per pytest run,
from `make labelstudio`'s own virtual environment (it pins its own Django stack)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
LS_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
LS_INSTALLED = REPO / ".venv-labelstudio" / ".installed"  # written by `make labelstudio`
TOKEN = "semilabel-test-token-0123456789"
ADMIN = "admin@semilabel.test"


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudioServer]:
    if not LS_INSTALLED.exists():
        pytest.skip(
            f"Label Studio is not installed at {LS_BIN}: run `make labelstudio` "
            "(`make test` does it) to test the real round trip"
        )
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("USERNAME", "PASSWORD", "HOST", "PORT", "USER_TOKEN")  # LS reads these too
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data / "data"),
        LABEL_STUDIO_USERNAME=ADMIN,
        LABEL_STUDIO_PASSWORD="semilabel-test-password",
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",  # else the preset token gets 401
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LATEST_VERSION_CHECK="false",
    )
    log = open(data / "label-studio.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            str(LS_BIN),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--debug",
        ],
        cwd=data,  # not the checkout: a ./mydata there would switch on local-file serving
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"Label Studio exited: {(data / 'label-studio.log').read_text()[-2000:]}"
                )
            try:
                r = httpx.get(
                    f"{url}/api/current-user/whoami",
                    headers={"Authorization": f"Token {TOKEN}"},
                    timeout=3,
                )
                if r.status_code == 200 and r.json().get("email") == ADMIN:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("Label Studio did not answer within 240 s")
            time.sleep(1)
        yield LabelStudioServer(url, TOKEN)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
