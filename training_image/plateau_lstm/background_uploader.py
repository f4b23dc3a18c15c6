"""Uploads in a background thread, so training never waits on storage.

Training hands over a job (a checkpoint folder to publish, the final model) and carries on. One
worker thread runs the jobs in order and retries a failing one with capped exponential backoff
for as long as it takes, so a storage server that restarts costs nothing but time. The queue of
waiting jobs is bounded: when it is full, the oldest waiting job that may be dropped (a checkpoint,
which the next one supersedes) is dropped, never the current one and never a job that must land
(the final model). `wait` is where a run finally does wait: at its end, for a bounded time.

Example:

```python
with BackgroundUploader(max_pending=2) as uploader:
    uploader.submit(UploadJob("checkpoint epoch-0003", lambda: store.publish(folder)))
    ...
    uploader.submit(UploadJob("model", publish_model, droppable=False))
    uploader.wait(timeout=300)   # raises UploadsFailed when storage never came back
```
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from plateau_lstm.errors import TrainingFailed

__all__ = ["BackgroundUploader", "UploadJob", "UploadsFailed"]

log = logging.getLogger("plateau_lstm")

_UPLOAD_NICENESS = 10  # added to training's: the scheduler prefers training when both want a core


class UploadsFailed(TrainingFailed):
    """Jobs were still failing (or waiting) when the time to wait for storage ran out."""


@dataclass
class UploadJob:
    """One unit of upload work.

    Args:
        name: what it uploads, for log lines ("checkpoint epoch-0003").
        run: does the upload; raising means "try again later". Called again on retry, so it
            must be safe to repeat (publishing a folder with overwrite is).
        droppable: may be dropped when the queue is full (a later job supersedes it).
            Defaults to True.
        on_done: called after `run` succeeded (e.g. pruning old checkpoints); its errors are
            logged, never retried. Defaults to None.
        on_discard: called when the job is dropped or abandoned, and after `on_done` (e.g.
            removing the local staging folder). Defaults to None.
    """

    name: str
    run: Callable[[], object]
    droppable: bool = True
    on_done: Callable[[], object] | None = None
    on_discard: Callable[[], object] | None = None
    attempts: int = 0
    seconds: float = 0.0
    """Seconds from the first attempt to success (retries included)."""


class BackgroundUploader:
    """Runs `UploadJob`s in one daemon thread, in order, retrying each until it succeeds.

    Args:
        max_pending: jobs that may wait behind the running one, at least 1. Defaults to 2.
        first_retry_s: pause after the first failure; it doubles per failure. Defaults to 0.5.
        max_retry_s: longest pause between attempts. Defaults to 10.
        on_uploaded: called with each job that succeeded (metrics hook). Defaults to None.
    """

    def __init__(
        self,
        max_pending: int = 2,
        first_retry_s: float = 0.5,
        max_retry_s: float = 10.0,
        on_uploaded: Callable[[UploadJob], object] | None = None,
    ):
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(
                f"max_pending must be an int >= 1. Received: max_pending={max_pending!r}"
            )
        if not 0 < first_retry_s <= max_retry_s:
            raise ValueError(
                "retry pauses need 0 < first_retry_s <= max_retry_s. Received: "
                f"first_retry_s={first_retry_s!r}, max_retry_s={max_retry_s!r}"
            )
        self.max_pending = max_pending
        self.first_retry_s = float(first_retry_s)
        self.max_retry_s = float(max_retry_s)
        self.on_uploaded = on_uploaded
        self._pending: collections.deque[UploadJob] = collections.deque()
        self._current: UploadJob | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.completed: list[UploadJob] = []
        self.dropped: list[str] = []
        self.failures = 0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="checkpoint-uploader", daemon=True)
        self._thread.start()

    def __enter__(self) -> BackgroundUploader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def submit(self, job: UploadJob) -> None:
        """Queue `job` and return at once; may drop the oldest droppable waiting job."""
        discarded = None
        with self._cond:
            if self._closed:
                raise RuntimeError("BackgroundUploader.submit after close")
            if len(self._pending) >= self.max_pending:
                droppable = [waiting for waiting in self._pending if waiting.droppable]
                if droppable:
                    discarded = droppable[0]
                    self._pending.remove(discarded)
                    self.dropped.append(discarded.name)
            self._pending.append(job)
            self._cond.notify_all()
        if discarded is not None:
            log.warning(
                "train: storage is slower than training; skipped uploading %s (superseded by %s)",
                discarded.name,
                job.name,
            )
            _call_quietly(discarded.on_discard, discarded.name)

    def wait(self, timeout: float) -> None:
        """Block until every job is done, or raise UploadsFailed after `timeout` seconds.

        After a failure the worker stops trying: the caller is about to report it.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._pending or self._current is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    unfinished = [job.name for job in [self._current, *self._pending] if job]
                    self._closed = True
                    self._cond.notify_all()
                    raise UploadsFailed(self._failure_message(unfinished, timeout))
                self._cond.wait(left)

    def close(self) -> None:
        """Stop taking jobs, abandon the waiting ones and let the worker end (no waiting)."""
        with self._cond:
            self._closed = True
            abandoned, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        for job in abandoned:
            _call_quietly(job.on_discard, job.name)

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._pending and self._current is None

    def _failure_message(self, unfinished: list[str], timeout: float) -> str:
        reason = f"the last error was: {self.last_error}" if self.last_error else "still uploading"
        return (
            f"storage did not take {', '.join(unfinished)} within {timeout:g} s of the end of "
            f"training ({reason}). The run is not published. Once storage is reachable again, "
            "run the same command: it resumes from the last committed checkpoint."
        )

    def _work(self) -> None:
        _yield_cpu_to_training()
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._current = self._pending.popleft()
            ok = self._run_until_done(job)
            with self._cond:
                self._current = None
                if ok:
                    self.completed.append(job)
                self._cond.notify_all()
            if ok:
                _call_quietly(job.on_done, job.name)
                if self.on_uploaded is not None:
                    _call_quietly(lambda job=job: self.on_uploaded(job), job.name)
            _call_quietly(job.on_discard, job.name)

    def _run_until_done(self, job: UploadJob) -> bool:
        pause = self.first_retry_s
        started = time.perf_counter()
        while True:
            job.attempts += 1
            try:
                job.run()
            except Exception as err:  # any failure of storage: retry, training goes on
                with self._cond:
                    self.failures += 1
                    self.last_error = err
                    if self._closed:
                        return False
                if job.attempts == 1:
                    log.warning(
                        "train: uploading %s failed (%s); retrying in the background, "
                        "training goes on",
                        job.name,
                        _one_line(err),
                    )
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, timeout=pause)
                    if self._closed:
                        return False
                pause = min(pause * 2, self.max_retry_s)
                continue
            job.seconds = time.perf_counter() - started
            if job.attempts > 1:
                log.info(
                    "train: uploaded %s after %d attempts (%.1f s)",
                    job.name,
                    job.attempts,
                    job.seconds,
                )
            return True


def _yield_cpu_to_training() -> None:
    """Lower this thread's scheduling priority (and that of the transfer threads it starts).

    On Linux a nice value belongs to the thread and new threads inherit it, so uploads only use
    CPU that training leaves idle. Where that is not possible, uploads run at normal priority.
    """
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + _UPLOAD_NICENESS))


def _call_quietly(callback: Callable[[], object] | None, name: str) -> None:
    if callback is None:
        return
    try:
        callback()
    except Exception as err:  # housekeeping after an upload must not stop the uploads
        log.warning("train: after uploading %s: %s", name, _one_line(err))


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return " ".join(text.split())
