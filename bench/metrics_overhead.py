"""Epoch time with the Prometheus metrics callback and pushes / without (goal <= 1.01).

One compiled model (the default residual LSTM on the bundled CO2 series) with the plateau
callbacks in both arms; the "with" arm adds `PrometheusMetrics`, whose exporter serves /metrics
on a loopback port (scraped every second by a thread here, harder than any Prometheus) and
pushes to a real Pushgateway (Debian's prometheus-pushgateway, started here on loopback) at
every epoch end. The arms take turns, A B B A A B ..., so both see the same machine load; the
figure is the median of the per-pair ratios of the timed fits' wall time per epoch. The time
spent inside the callback's own hooks, the only part training waits for, is printed too: it
does not drown in the machine's noise as a ratio of two epoch times does.

    .venv/bin/python bench/metrics_overhead.py --rounds 7 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import compiled_model, plateau_callbacks  # noqa: E402

from plateau_lstm.cli import sample_data_path  # noqa: E402
from plateau_lstm.config import MetricsConfig, PrepareConfig, TrainConfig  # noqa: E402
from plateau_lstm.metrics import JOB  # noqa: E402
from plateau_lstm.prepare import prepare  # noqa: E402
from plateau_lstm.prepared import load_prepared  # noqa: E402
from plateau_lstm.storage import open_store  # noqa: E402
from plateau_lstm.windows import change_scales, make_dataset, window_count  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_pushgateway(port: int, log_path: str) -> subprocess.Popen:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        sys.exit("prometheus-pushgateway is not installed: run `make services`")
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=open(log_path, "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("the Pushgateway did not start")


def scrape_every_second(url: str, stop: threading.Event) -> threading.Thread:
    def scrape():
        while not stop.wait(1.0):
            try:
                urllib.request.urlopen(url, timeout=2).read()
            except OSError:
                return  # the endpoint closed at the end of the bench

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    return thread


def timed_callback_class():
    from plateau_lstm.callbacks.prometheus_metrics import PrometheusMetrics

    class TimedPrometheusMetrics(PrometheusMetrics):
        """Also measures the time spent in its own epoch hooks: the part training waits for."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.hook_seconds = []
            self._begin_seconds = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            started = time.perf_counter()
            super().on_epoch_begin(epoch, logs)
            self._begin_seconds = time.perf_counter() - started

        def on_epoch_end(self, epoch, logs=None):
            started = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            self.hook_seconds.append(time.perf_counter() - started + self._begin_seconds)

    return TimedPrometheusMetrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from plateau_lstm.metrics_export import MetricsExporter

    config = TrainConfig()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as scratch:
        gateway_port, metrics_port = free_port(), free_port()
        gateway = start_pushgateway(gateway_port, os.path.join(scratch, "pushgateway.log"))
        stop = threading.Event()
        try:
            prepared_uri = os.path.join(scratch, "prepared")
            prepare(
                sample_data_path(), prepared_uri, PrepareConfig(), config.window, config.horizon
            )
            prepared = load_prepared(open_store(prepared_uri))
            start, end = prepared.bounds["train"]
            windows = window_count(start, end, config.window, config.horizon)
            steps = math.ceil(windows / config.batch_size)
            scale = float(change_scales(prepared.values, start, end, 1)[0])
            common = dict(window=config.window, horizon=1, batch_size=config.batch_size)
            train = make_dataset(
                prepared.values, start, end, shuffle=True, seed=1, change_scale=scale, **common
            )
            val = make_dataset(
                prepared.values, *prepared.bounds["val"], change_scale=scale, **common
            )
            model, schedule, loss = compiled_model(prepared, config, steps)
            events = os.path.join(scratch, "events.jsonl")
            plateau = plateau_callbacks(schedule, loss, events)
            exporter = MetricsExporter(
                MetricsConfig(
                    port=metrics_port,
                    addr="127.0.0.1",
                    pushgateway=f"http://127.0.0.1:{gateway_port}",
                    model_name="bench",
                )
            )
            exporter.start()
            scrape_every_second(f"http://127.0.0.1:{metrics_port}/metrics", stop)
            TimedPrometheusMetrics = timed_callback_class()  # noqa: N806 - a class
            metrics = TimedPrometheusMetrics(
                exporter,
                detector=plateau["plateau_detector"],
                lr_callback=plateau["cyclical_learning_rate"],
                loss_switcher=plateau["adaptive_loss_switcher"],
                nan_guard=plateau["nan_guard"],
            )
            without = list(plateau.values())
            arms = {"with": [*without, metrics], "without": without}
            for callbacks in arms.values():  # warm-up: tracing, first pushes
                model.fit(train, validation_data=val, epochs=1, verbose=0, callbacks=callbacks)

            timings = {"with": [], "without": []}
            for round_ in range(args.rounds):
                # A B, then B A: whichever runs first in a pair gets no systematic edge.
                order = list(arms.items()) if round_ % 2 == 0 else list(arms.items())[::-1]
                for name, callbacks in order:
                    started = time.perf_counter()
                    model.fit(
                        train,
                        validation_data=val,
                        epochs=args.epochs,
                        verbose=0,
                        callbacks=callbacks,
                    )
                    timings[name].append((time.perf_counter() - started) / args.epochs)
            stop.set()
            exporter.close()
            pushes = exporter_pushes(gateway_port)
        finally:
            stop.set()
            gateway.kill()
            gateway.wait()
    ratios = [a / b for a, b in zip(timings["with"], timings["without"], strict=True)]
    for name, label in (("with", "metrics + pushes"), ("without", "no metrics      ")):
        values = timings[name]
        print(
            f"epoch seconds, {label}: median {statistics.median(values):.3f} "
            f"(min {min(values):.3f}, max {max(values):.3f})"
        )
    print(
        f"ratio with/without, per pair: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); goal <= 1.01"
    )
    hooks = statistics.median(metrics.hook_seconds)
    print(
        f"time inside the callback's hooks: median {hooks * 1e3:.2f} ms per epoch "
        f"({hooks / statistics.median(timings['with']):.4%} of an epoch; the push itself runs "
        "in the exporter's thread)"
    )
    expected = 1 + args.rounds * args.epochs
    print(f"epochs the Pushgateway holds: {pushes:.0f} of {expected} timed with metrics")
    return 0


def exporter_pushes(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    for line in body.splitlines():
        if line.startswith("plateau_lstm_epoch_duration_seconds_count{") and JOB in line:
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
