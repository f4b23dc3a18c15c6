"""Real Prometheus and Pushgateway processes on loopback ports, for the metrics and alert tests.

Debian's `prometheus` (with `promtool`) and `prometheus-pushgateway` packages provide the
binaries; `make services` installs them. A missing binary fails the test that needs it, with
that advice: these tests are the proof that alerts fire, so they never skip.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import string
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "k8s" / "prometheus"


def render_rules():
    """k8s/prometheus/render_rules.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "render_rules", PROMETHEUS_DIR / "render_rules.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: run `make services` (Debian packages)")
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, picked by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    # No proxy, whatever the environment says: everything here is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.read()


class _Process:
    """A service binary started on a loopback port, logging to a file, killed at the end."""

    name = "service"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited while starting:\n{self.log_tail()}")
            try:
                http_get(f"{self.url}/-/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crashed or evicted service would go."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Pushgateway(_Process):
    name = "pushgateway"

    def command(self) -> list[str]:
        return [
            binary("prometheus-pushgateway"),
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    def groups(self) -> list[dict]:
        """The pushed groups, as the Pushgateway's API lists them."""
        return json.loads(http_get(f"{self.url}/api/v1/metrics"))["data"]

    def group(self, **labels: str) -> dict[str, dict] | None:
        """{metric name: family} of the group whose labels include `labels`, or None."""
        for group in self.groups():
            if labels.items() <= group["labels"].items():
                return {name: family for name, family in group.items() if name != "labels"}
        return None


class Prometheus(_Process):
    """Prometheus with k8s/prometheus/prometheus-test.yml.tmpl filled in for this test run."""

    name = "prometheus"

    def __init__(self, workdir: Path, rules: str, pushgateway: str, live_targets=(), interval="1s"):
        super().__init__(workdir)
        (workdir / "rules.yml").write_text(rules)
        template = string.Template((PROMETHEUS_DIR / "prometheus-test.yml.tmpl").read_text())
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(
            template.substitute(
                interval=interval,
                rule_file=str(workdir / "rules.yml"),
                pushgateway=pushgateway,
                live_targets=json.dumps(list(live_targets)),
            )
        )

    def command(self) -> list[str]:
        return [
            binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{query}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list[dict]:
        return self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step
        )["result"]

    def alerts(self, alertname: str) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == alertname]
