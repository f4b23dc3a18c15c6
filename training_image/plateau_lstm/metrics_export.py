"""Serves a run's metrics on HTTP and pushes them to a Pushgateway, never holding training up.

`/metrics` is for live scrapes of a running pod. The Pushgateway is what the alert rules read:
it keeps the last state of every model's latest run after its pod is gone, including the time
of the last success. Every push is a push-add (HTTP POST) under job `plateau-lstm-train` and the
grouping key `model=<model name>`, so it replaces only the metrics it carries: the per-epoch
pushes never erase the last success timestamp of an earlier run, and the success push adds it
without erasing anything.

Pushes run in one daemon thread. `push()` only asks for one and returns at once; requests that
pile up while a push is in flight collapse into one push of the newest values. A push gives up
after `push_timeout` (at most 2 s); a Pushgateway that is down or slow costs one warning per
outage, and the next epoch's push is the retry. `close()` waits a bounded time for the last
pushes (the success timestamp among them) and stops the endpoint.

Example:

```python
config = MetricsConfig(port=9464, pushgateway="http://pushgateway:9091", model_name="demand")
with MetricsExporter(config) as exporter:
    model.fit(..., callbacks=[..., PrometheusMetrics(exporter, detector=detector)])
    publish(model)
    exporter.mark_success()
```
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import pushadd_to_gateway, start_http_server

from plateau_lstm.config import MetricsConfig
from plateau_lstm.metrics import GROUPING_LABEL, JOB, TrainingMetrics

log = logging.getLogger("plateau_lstm")


class MetricsExporter:
    """Owns one run's `TrainingMetrics`, its `/metrics` endpoint and its Pushgateway pusher.

    Args:
        config: where to serve and push; None serves and pushes nothing (the metrics are still
            kept, which costs nothing measurable). Defaults to None.
        metrics: the `TrainingMetrics` to export; a fresh one by default.
    """

    def __init__(self, config: MetricsConfig | None = None, metrics: TrainingMetrics | None = None):
        if config is not None and not isinstance(config, MetricsConfig):
            raise ValueError(f"`config` must be a MetricsConfig or None. Received: {config!r}")
        self.config = config
        self.metrics = metrics if metrics is not None else TrainingMetrics()
        self.port: int | None = None
        """The port /metrics is served on once started; None when it is not served."""
        self._server = None
        self._pusher: _Pusher | None = None
        self._started = False

    def __enter__(self) -> MetricsExporter:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Starts the endpoint and the pusher; a port in use costs a warning, not the run."""
        if self._started or self.config is None:
            return
        self._started = True
        config = self.config
        if config.port:
            try:
                self._server, _ = start_http_server(
                    config.port, addr=config.addr, registry=self.metrics.registry
                )
                self.port = self._server.server_port
                log.info("metrics: serving http://%s:%d/metrics", config.addr, self.port)
            except OSError as err:
                log.warning(
                    "metrics: cannot serve /metrics on %s:%d (%s); training goes on without "
                    "it. Give another --metrics-port, or 0 to turn the endpoint off.",
                    config.addr,
                    config.port,
                    err,
                )
        if config.pushgateway:
            self._pusher = _Pusher(
                config.pushgateway, config.model_name, self.metrics, config.push_timeout
            )
            log.info(
                "metrics: pushing to %s as job %s, %s=%s",
                config.pushgateway,
                JOB,
                GROUPING_LABEL,
                config.model_name,
            )

    def push(self) -> None:
        """Asks for a push of the current values and returns at once (no-op without a gateway)."""
        if self._pusher is not None:
            self._pusher.request()

    def mark_success(self, timestamp: float | None = None) -> None:
        """Sets the last-success timestamp and pushes it (added to the group, nothing erased)."""
        self.metrics.mark_success(timestamp)
        self.push()

    def flush(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds for the pushes asked for so far; True when all ran."""
        return self._pusher is None or self._pusher.flush(timeout)

    def close(self) -> None:
        """Waits a bounded time for the last pushes, then stops the pusher and the endpoint."""
        if self._pusher is not None:
            pusher, self._pusher = self._pusher, None
            # Room for an in-flight push to time out and one more attempt with the last values.
            if not pusher.close(2 * pusher.timeout + 1):
                log.warning(
                    "metrics: the last push to %s did not finish in time; the Pushgateway may "
                    "miss this run's final values",
                    pusher.gateway,
                )
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()


class _Pusher:
    """One daemon thread that push-adds the newest values whenever asked, one push at a time."""

    def __init__(self, gateway: str, model_name: str, metrics: TrainingMetrics, timeout: float):
        self.gateway = gateway
        self.grouping_key = {GROUPING_LABEL: model_name}
        self.metrics = metrics
        self.timeout = timeout
        self.failing = False
        self.pushes = 0
        self.failures = 0
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="pushgateway-pusher", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        with self._cond:
            target = self._requested
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float) -> bool:
        finished = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        return finished

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._done < self._requested or self._closing)
                if self._done >= self._requested:
                    return  # closing, nothing left to push
                target = self._requested
            self._push_once()
            with self._cond:
                self._done = target
                self._cond.notify_all()

    def _push_once(self) -> None:
        started = time.monotonic()
        try:
            pushadd_to_gateway(
                self.gateway,
                job=JOB,
                registry=self.metrics.registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout,
            )
        except Exception as err:  # any failure is the gateway's, and must not reach training
            self.failures += 1
            if not self.failing:
                self.failing = True
                log.warning(
                    "metrics: cannot push to the Pushgateway at %s (%s, after %.1f s); training "
                    "goes on and retries at the next epoch end",
                    self.gateway,
                    _describe(err),
                    time.monotonic() - started,
                )
            return
        self.pushes += 1
        if self.failing:
            self.failing = False
            log.info("metrics: the Pushgateway at %s answers again", self.gateway)


def _describe(err: BaseException) -> str:
    reason = getattr(err, "reason", None)  # URLError wraps the socket error in `reason`
    return f"{type(err).__name__}: {reason if reason is not None else err}"
