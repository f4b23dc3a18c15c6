"""End to end: real trainings push to a real Pushgateway, a real Prometheus runs our rules.

Two small trainings run at once, each a `plateau-lstm train` process:
- "plateauing" learns nothing: a white-noise target and a rate of 1e-9, so validation MSE never
  improves and the detector reaches "severe" at epoch 4 (`--patience 1,2,3`);
- "improving" fits a sine wave, improving at every epoch, and finishes successfully.
Prometheus scrapes the Pushgateway (honor_labels, as in production) and both live /metrics
endpoints every second, and evaluates the rules every second. The test asserts through
Prometheus' HTTP API that PlateauLSTMTrainingStalled fires for the first and never for the
second, and runs every dashboard panel's query against what was collected.

Why the rules' durations are scaled: production waits 15 minutes at "severe" and looks 30
minutes back, and a test cannot wait that long, nor backdate samples through a Pushgateway. So
this Prometheus loads the very same rules (rendered from the PrometheusRule by
k8s/prometheus/render_rules.py) with every `for:`, range and offset duration divided by
SCALE: 15m -> 3s, 30m -> 6s, 1h -> 12s. Nothing else differs, not one character of the
expressions, so what fires here is what fires in production, only sooner. The production
durations themselves are proven by promtool's simulated clock (tests/test_alert_rules.py).
Thresholds that are not durations (the 5-minute floors, 26 hours) are left alone; none of them
decides an alert this test watches.

The last test kills a Pushgateway in the middle of a run and finds nothing changed but one
warning.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from monitoring_services import REPO, Prometheus, Pushgateway, free_port, render_rules

from plateau_lstm.cli import main
from plateau_lstm.config import MetricsConfig, ModelConfig, TrainConfig
from plateau_lstm.metrics import DEFINITIONS, JOB
from plateau_lstm.train import train

SCALE = 300
WINDOW_SECONDS = 30 * 60 / SCALE  # the longest look-back of the Stalled rule, scaled
TINY = ["--window", "16", "--lstm-layers", "1", "--lstm-units", "8", "--dense-units", "8"]
TINY += ["--batch-size", "128", "--verbose", "0"]
IMPROVING_EPOCHS = 30
# Wider than TINY: about 0.3 s an epoch on a quiet machine, so the improving run pushes for longer
# than the Stalled rule's look-back (WINDOW_SECONDS) while still improving every few epochs.
IMPROVING_MODEL = ["--lstm-layers", "2", "--lstm-units", "32"]


def exposed_names(include_success: bool) -> set[str]:
    names = set()
    for d in DEFINITIONS:
        if d.name == "plateau_lstm_last_success_timestamp_seconds" and not include_success:
            continue
        names |= {f"{d.name}_count", f"{d.name}_sum"} if d.kind == "summary" else {d.name}
    return names


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    # The sine is longer so that each of its epochs takes a while: the improving run must push
    # for longer than the Stalled rule's look-back even on a fast, quiet machine.
    noise_steps, sine_steps = np.arange(1200), np.arange(5000)
    series = {
        "noise": rng.normal(size=len(noise_steps)),
        "sine": np.sin(2 * np.pi * sine_steps / 24) + 0.05 * rng.normal(size=len(sine_steps)),
    }
    sets = {}
    for name, values in series.items():
        stamps = pd.date_range("2024-01-01", periods=len(values), freq="h", tz="UTC")
        pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(root / f"{name}.csv")
        sets[name] = root / f"{name}-prepared"
        csv_file = root / f"{name}.csv"
        args = ["--input", str(csv_file), "--output", str(sets[name]), "--window", "16"]
        assert main(["-q", "prepare", *args]) == 0
    return sets


def train_process(prepared_dir: Path, output: Path, *args: str) -> subprocess.Popen:
    log = (output.parent / f"{output.name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "plateau_lstm.cli", "train"]
        + ["--prepared", str(prepared_dir), "--output", str(output), *TINY, *args],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Scene:
    """What the module's trainings left behind, for the tests to look at."""

    def __init__(self, prometheus: Prometheus, pushgateway: Pushgateway, started: float):
        self.prometheus = prometheus
        self.pushgateway = pushgateway
        self.started = started
        self.fired: dict | None = None
        self.improving_alive_when_fired = False
        self.improving_exit: int | None = None
        self.logs: dict[str, str] = {}


@pytest.fixture(scope="module")
def scene(prepared, tmp_path_factory) -> Scene:
    work = tmp_path_factory.mktemp("monitoring")
    (work / "prometheus").mkdir()
    pushgateway = Pushgateway(work)
    pushgateway.start()
    live = {"plateauing": free_port(), "improving": free_port()}
    prometheus = Prometheus(
        work / "prometheus",
        rules=render_rules().render(factor=1 / SCALE),
        pushgateway=pushgateway.address,
        live_targets=[f"127.0.0.1:{port}" for port in live.values()],
    )
    prometheus.start()
    scene = Scene(prometheus, pushgateway, started=time.time())
    common = ["--pushgateway", pushgateway.url, "--metrics-addr", "127.0.0.1"]
    # A rate of 1e-9 learns nothing: validation MSE never improves, severe from epoch 4.
    stuck = ["--patience", "1,2,3", "--base-lr", "1e-9", "--max-lr", "2e-9", "--epochs", "500"]
    plateauing = train_process(
        prepared["noise"],
        work / "plateauing",
        *common,
        *["--model-name", "plateauing", "--metrics-port", str(live["plateauing"]), *stuck],
    )
    learning = ["--no-forecast-change", "--epochs", str(IMPROVING_EPOCHS), *IMPROVING_MODEL]
    improving = train_process(
        prepared["sine"],
        work / "improving",
        *common,
        *["--model-name", "improving", "--metrics-port", str(live["improving"]), *learning],
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and plateauing.poll() is None:
            firing = [
                alert
                for alert in prometheus.alerts("PlateauLSTMTrainingStalled")
                if alert["labels"].get("model") == "plateauing" and alert["state"] == "firing"
            ]
            if firing:
                scene.fired = firing[0]
                scene.improving_alive_when_fired = improving.poll() is None
                break
            time.sleep(0.5)
        stop(plateauing)
        scene.improving_exit = improving.wait(timeout=240)
        time.sleep(3)  # a few more scrapes of the finished run's last pushes
        yield scene
    finally:
        for process in (plateauing, improving):
            stop(process)
        for name in ("plateauing", "improving"):
            scene.logs[name] = (work / f"{name}.log").read_text()
        prometheus.kill()
        pushgateway.kill()


def test_stalled_fires_for_a_run_stuck_on_a_plateau(scene):
    assert scene.fired is not None, (
        "PlateauLSTMTrainingStalled never fired for the plateauing run; its log:\n"
        + scene.logs.get("plateauing", "")[-3000:]
    )
    labels = scene.fired["labels"]
    assert labels["job"] == JOB and labels["severity"] == "critical"
    assert labels["reason"] in ("severe_plateau", "no_improvement")
    assert scene.fired["annotations"]["runbook_url"].endswith("#plateaulstmtrainingstalled")


def test_stalled_never_fires_for_an_improving_run(scene):
    prometheus = scene.prometheus
    assert scene.improving_exit == 0, scene.logs.get("improving", "")[-3000:]
    alerts = prometheus.query_range(
        'ALERTS{alertname="PlateauLSTMTrainingStalled", model="improving"}',
        scene.started,
        time.time(),
    )
    # Neither pending nor firing, ever.
    assert alerts == [], (alerts, scene.logs.get("improving", "")[-3000:])
    # It was watched long enough to mean something: pushes over more than the rule's window.
    (span,) = prometheus.query(
        f'max_over_time(push_time_seconds{{job="{JOB}", model="improving"}}[10m])'
        f' - min_over_time(push_time_seconds{{job="{JOB}", model="improving"}}[10m])'
    )
    assert float(span["value"][1]) > WINDOW_SECONDS, (
        f"the improving run pushed for only {span['value'][1]} s; raise IMPROVING_EPOCHS"
    )


def test_a_finished_run_counts_as_finished(scene):
    prometheus = scene.prometheus
    unfinished = "job_model:plateau_lstm_push_age_seconds:unfinished"
    assert prometheus.query(f'{unfinished}{{model="improving"}}') == []
    assert prometheus.query(f'{unfinished}{{model="plateauing"}}')
    retrain_missing = prometheus.alerts("PlateauLSTMNightlyRetrainMissing")
    assert not [a for a in retrain_missing if a["labels"].get("model") == "improving"]


def test_every_metric_arrives_through_the_pushgateway_and_the_live_endpoint(scene):
    def names(selector: str) -> set[str]:
        selector = f"{{{selector}, __name__=~'plateau_lstm_.+'}}"
        result = scene.prometheus.query(f"group by (__name__) (last_over_time({selector}[10m]))")
        return {series["metric"]["__name__"] for series in result}

    assert names(f'job="{JOB}", model="improving"') == exposed_names(include_success=True)
    # The live endpoint serves while training runs; the success time only comes after.
    assert names('job="plateau-lstm-live"') == exposed_names(include_success=False)
    group = scene.pushgateway.group(job=JOB, model="improving")
    assert float(group["plateau_lstm_epoch"]["metrics"][0]["value"]) == IMPROVING_EPOCHS


def dashboard_panels() -> list[dict]:
    configmap = yaml.safe_load((REPO / "k8s" / "base" / "dashboard-configmap.yaml").read_text())
    (text,) = configmap["data"].values()
    return json.loads(text)["panels"]


def test_every_dashboard_query_runs_and_finds_data(scene):
    now = time.time()
    for panel in dashboard_panels():
        for target in panel["targets"]:
            # Grafana's variables, as "All models" fills them in.
            expr = target["expr"].replace("$model", ".*")
            assert "$" not in expr, (panel["title"], expr)
            result = scene.prometheus.query_range(expr, scene.started, now)
            assert result, f"panel {panel['title']!r}: no data for {expr}"
    models = scene.prometheus.api(
        "label/model/values", **{"match[]": f'plateau_lstm_epoch{{job="{JOB}"}}'}
    )
    assert {"plateauing", "improving"} <= set(models)


# ------------------------------------------------------------------------------------------------


def history(output: Path) -> list[dict]:
    with (output / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def test_killing_the_pushgateway_mid_run_changes_nothing_but_one_warning(
    prepared, tmp_path, caplog
):
    """The same run twice, in this process (seeded: identical); once its Pushgateway dies."""
    config = TrainConfig(
        epochs=6,
        batch_size=128,
        window=16,
        model=ModelConfig(lstm_layers=1, lstm_units=8, dense_units=8),
    )
    caplog.set_level(logging.INFO, logger="plateau_lstm")
    logs, killed_at_epoch = {}, []
    for name in ("reference", "victim"):
        gateway = Pushgateway(tmp_path)
        gateway.start()
        stop_watching = threading.Event()

        def kill_after_first_push(gateway=gateway, stop_watching=stop_watching):
            while not stop_watching.wait(0.01):
                group = gateway.group(job=JOB, model="kill-test")
                if group is not None:
                    killed_at_epoch.append(group["plateau_lstm_epoch"]["metrics"][0]["value"])
                    gateway.kill()
                    return

        watcher = threading.Thread(target=kill_after_first_push, daemon=True)
        if name == "victim":
            watcher.start()
        metrics = MetricsConfig(port=0, pushgateway=gateway.url, model_name="kill-test")
        caplog.clear()
        try:
            summary = train(str(prepared["sine"]), str(tmp_path / name), config, 0, metrics=metrics)
            if name == "reference":  # its Pushgateway got everything, the success time too
                group = gateway.group(job=JOB, model="kill-test")
                assert group["plateau_lstm_epoch"]["metrics"][0]["value"] == "6"
                assert "plateau_lstm_last_success_timestamp_seconds" in group
        finally:
            stop_watching.set()
            if watcher.is_alive():
                watcher.join()
            gateway.kill()
        assert summary["epochs_run"] == 6
        logs[name] = [
            (r.levelname, r.getMessage().replace(str(tmp_path / name), "OUTPUT"))
            for r in caplog.records
            if r.name == "plateau_lstm"
        ]
        logs[name] = [
            (level, text.replace(gateway.url, "PUSHGATEWAY")) for level, text in logs[name]
        ]

    assert killed_at_epoch and int(killed_at_epoch[0]) < 6, "killed only after the run's end"
    warnings = [entry for entry in logs["victim"] if "Pushgateway" in entry[1]]
    assert len(warnings) == 1, logs["victim"]
    assert warnings[0][0] == "WARNING"
    assert warnings[0][1].startswith("metrics: cannot push to the Pushgateway at PUSHGATEWAY")
    assert [entry for entry in logs["victim"] if entry not in warnings] == logs["reference"]
    assert history(tmp_path / "victim") == history(tmp_path / "reference")
    assert (tmp_path / "victim" / "model.keras").is_file()
