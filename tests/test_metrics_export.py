"""The /metrics endpoint and the Pushgateway pusher, against a real Pushgateway on loopback."""

import logging
import socket
import threading
import time
import urllib.error

import pytest
from monitoring_services import Pushgateway, free_port, http_get

from plateau_lstm.config import MetricsConfig
from plateau_lstm.metrics import JOB
from plateau_lstm.metrics_export import MetricsExporter


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    gateway = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    gateway.start()
    yield gateway
    gateway.kill()


def exporter(**config) -> MetricsExporter:
    config.setdefault("port", 0)
    config.setdefault("addr", "127.0.0.1")
    return MetricsExporter(MetricsConfig(**config))


def value(group: dict, name: str) -> str:
    return group[name]["metrics"][0]["value"]


def pusher_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "Pushgateway" in r.getMessage()
    ]


def test_serves_metrics_on_http_only_while_open():
    port = free_port()
    with exporter(port=port) as served:
        served.metrics.update(epoch=3, plateau_level=1)
        body = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        assert "plateau_lstm_epoch 3.0" in body
        assert "plateau_lstm_plateau_level 1.0" in body
        assert served.port == port
    with pytest.raises(urllib.error.URLError):
        http_get(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_a_port_in_use_costs_a_warning_not_the_run(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.INFO, logger="plateau_lstm"), exporter(port=port) as served:
            served.metrics.update(epoch=1)
            served.push()
        assert served.port is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in warning.getMessage()
    assert "--metrics-port" in warning.getMessage()


def test_pushes_add_to_the_model_group_and_never_erase_the_success_time(pushgateway):
    with exporter(pushgateway=pushgateway.url, model_name="demand") as first_night:
        first_night.metrics.update(epoch=12, train_loss=0.5)
        first_night.push()
        assert first_night.flush(5)
        group = pushgateway.group(job=JOB, model="demand")
        assert value(group, "plateau_lstm_epoch") == "12"
        assert "plateau_lstm_last_success_timestamp_seconds" not in group
        first_night.mark_success(1_800_000_000)
    group = pushgateway.group(job=JOB, model="demand")
    assert value(group, "plateau_lstm_last_success_timestamp_seconds") == "1.8e+09"
    labels = group["plateau_lstm_epoch"]["metrics"][0]["labels"]
    assert labels == {"job": JOB, "model": "demand", "instance": ""}  # no run id, no epoch

    # The next night's run pushes its epochs into the same group: the success time stays.
    with exporter(pushgateway=pushgateway.url, model_name="demand") as next_night:
        next_night.metrics.update(epoch=1)
        next_night.push()
        assert next_night.flush(5)
    group = pushgateway.group(job=JOB, model="demand")
    assert value(group, "plateau_lstm_epoch") == "1"
    assert value(group, "plateau_lstm_last_success_timestamp_seconds") == "1.8e+09"


def test_a_killed_pushgateway_costs_one_warning_and_pushes_resume_when_back(tmp_path, caplog):
    gateway = Pushgateway(tmp_path)
    gateway.start()
    caplog.set_level(logging.INFO, logger="plateau_lstm")
    with exporter(pushgateway=gateway.url, model_name="flaky") as run:
        run.metrics.update(epoch=1)
        run.push()
        assert run.flush(5)
        gateway.kill()
        for epoch in range(2, 6):
            run.metrics.update(epoch=epoch)
            started = time.perf_counter()
            run.push()
            assert time.perf_counter() - started < 0.05  # an epoch end never waits
            assert run.flush(5)
        assert len(pusher_warnings(caplog)) == 1

        gateway.start()  # same port, empty state: as after a restart without persistence
        run.metrics.update(epoch=6)
        run.push()
        assert run.flush(5)
        assert value(gateway.group(job=JOB, model="flaky"), "plateau_lstm_epoch") == "6"
        assert any("answers again" in r.getMessage() for r in caplog.records)

        gateway.kill()  # a second outage is worth a second warning
        run.push()
        assert run.flush(5)
    assert len(pusher_warnings(caplog)) == 2


@pytest.fixture
def silent_gateway():
    """A TCP port that accepts connections and never answers: a hung Pushgateway."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_hung_pushgateway_never_holds_training_up(silent_gateway, caplog):
    caplog.set_level(logging.INFO, logger="plateau_lstm")
    run = exporter(pushgateway=silent_gateway, model_name="slow")
    run.start()
    started = time.perf_counter()
    for epoch in range(1, 4):
        run.metrics.update(epoch=epoch)
        run.push()
    asked = time.perf_counter() - started
    assert asked < 0.05
    # Each push gives up after the 2 s timeout, and requests that arrive while one is in
    # flight collapse into one push of the newest values: one or two pushes for three asks.
    assert run.flush(10)
    flushed = time.perf_counter() - started
    assert 1.9 < flushed < 2 * 2.0 + 1.5, flushed
    run.push()
    run.close()  # bounded even while a push hangs
    assert time.perf_counter() - started - flushed < 2 * 2.0 + 1.5
    warnings = pusher_warnings(caplog)
    assert len(warnings) == 1
    assert "timed out" in warnings[0] and "retries at the next epoch end" in warnings[0]


def test_push_timeout_is_capped_at_two_seconds():
    with pytest.raises(ValueError, match="push_timeout"):
        MetricsConfig(push_timeout=5)
    with pytest.raises(ValueError, match="port"):
        MetricsConfig(port=70000)
