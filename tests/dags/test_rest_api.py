"""Triggering the DAG through Airflow's REST API (v2), as a script does after a data fix.

A real `airflow api-server` on a loopback port, over this session's SQLite metadata DB, with the
simple auth manager and a user of our own. Good params create a queued run carrying them; a bad
value gets HTTP 400 with the reason, and no run is created.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from dag_test_env import AIRFLOW_HOME, DAG_ID

USER = "retrainer"
STARTUP_TIMEOUT_S = 180


@dataclass
class ApiServer:
    base_url: str
    token: str

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def runs(self) -> list[dict]:
        status, body = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
        assert status == 200, body
        return body["dag_runs"]


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _airflow(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("airflow")), *args]


@pytest.fixture(scope="module")
def api_server(airflow_db) -> Iterator[ApiServer]:
    password = secrets.token_urlsafe(16)
    passwords_file = AIRFLOW_HOME / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({USER: password}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_LSTM_")}
    env.update(
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        }
    )
    # What the DAG processor does in a deployment: parse the DAG into the metadata DB.
    subprocess.run(
        _airflow("dags", "reserialize"), env=env, check=True, capture_output=True, timeout=300
    )
    port = _free_port()
    log_path = AIRFLOW_HOME / "api-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            _airflow("api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        token = _wait_for_token(server, base_url, password, log_path)
        yield ApiServer(base_url, token)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _wait_for_token(server: subprocess.Popen, base_url: str, password: str, log: Path) -> str:
    """Log in as soon as the server answers; the token endpoint proves auth is up too."""
    body = json.dumps({"username": USER, "password": password}).encode()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"api-server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        request = urllib.request.Request(
            f"{base_url}/auth/token",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["access_token"]
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last_error = err
            time.sleep(0.5)
    tail = log.read_text()[-3000:]
    pytest.fail(f"api-server not up within {STARTUP_TIMEOUT_S}s ({last_error!r}):\n{tail}")


GOOD_CONF = {"epochs": 5, "window": 16, "input_uri": "s3://raw-data/co2.csv", "gpus": 0}
BAD_CONFS = {
    "negative epochs": {"epochs": -3},
    "epochs as text": {"epochs": "ten"},
    "relative input path": {"input_uri": "data/co2.csv"},
    "margin of one": {"promotion_margin": 1.0},
}


def test_good_params_create_a_queued_run_that_carries_them(api_server):
    before = {run["dag_run_id"] for run in api_server.runs()}

    status, body = api_server.call(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": GOOD_CONF}
    )

    assert status == 200, body
    assert body["conf"] == GOOD_CONF
    assert body["state"] == "queued"
    assert body["run_type"] == "manual"
    created = {run["dag_run_id"] for run in api_server.runs()} - before
    assert created == {body["dag_run_id"]}


@pytest.mark.parametrize("conf", BAD_CONFS.values(), ids=BAD_CONFS.keys())
def test_bad_params_get_400_and_create_no_run(api_server, conf):
    before = api_server.runs()

    status, body = api_server.call(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
    )

    assert status == 400, body
    (name,) = conf
    assert name in body["detail"]
    assert api_server.runs() == before
