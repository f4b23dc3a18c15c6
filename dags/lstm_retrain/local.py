"""The `local` launcher: each step is a subprocess of the `plateau-lstm` CLI on the worker.

The embedded default (`make run`, tests, a single-machine Airflow). The CLI runs under the
worker's own interpreter (`python -m plateau_lstm.cli`), its output streams into the task log
line by line, and its JSON result comes back through `--result-file`, as from a pod's
`/airflow/xcom/return.json`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstm_retrain.settings import RetrainSettings
from lstm_retrain.steps import Step, step_arguments, workers

log = logging.getLogger(__name__)

# The CLI's exit status for bad input or options: retrying cannot help.
EXIT_BAD_INPUT = 2
_STOP_GRACE_S = 20


def step_task(step: Step, settings: RetrainSettings):
    """The TaskFlow task that runs `step` as a subprocess; returns the CLI's JSON result."""
    from airflow.sdk import get_current_context, task

    @task(task_id=step.task_id, execution_timeout=step.timeout, doc_md=step.doc)
    def run_step() -> dict[str, Any]:
        context = get_current_context()
        refuse_multi_worker(context["params"])
        argv = step_arguments(
            step.command, context["params"], settings.artifact_root, context["run_id"]
        )
        return run_cli(argv)

    return run_step()


def refuse_multi_worker(params: dict[str, Any]) -> None:
    """Fail the step, without retries, when the run asks for more than one training worker.

    The local launcher trains in one process on this machine. Its `workers` param already
    allows only 1; this catches a run created before the DAG was deployed that way.
    """
    if workers(params) > 1:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"workers={workers(params)} needs the kubernetes launcher "
            "(PLATEAU_LSTM_LAUNCHER=kubernetes), which trains as a TFJob; the local launcher "
            "trains in one process. Trigger the run again with workers=1."
        )


def run_cli(argv: Sequence[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `plateau-lstm *argv`, stream its output to the log and return its JSON result.

    Raises AirflowFailException (no retry) when the CLI refuses its input (exit 2), and
    RuntimeError (retried) for any other failure. The subprocess never outlives the task: a
    timeout or a kill of the task stops it (SIGTERM, then SIGKILL).
    """
    with tempfile.TemporaryDirectory(prefix="plateau-lstm-step-") as scratch:
        result_file = Path(scratch) / "return.json"
        command = [
            sys.executable,
            "-m",
            "plateau_lstm.cli",
            "--result-file",
            str(result_file),
            *argv,
        ]
        log.info("Running: %s", shlex.join(command))
        child_env = {**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"}
        last_lines: list[str] = []
        with subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=child_env,
            start_new_session=True,  # its own process group, so a stop reaches TF's workers too
        ) as process:
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    line = line.rstrip("\n")
                    log.info("%s", line)
                    last_lines = [*last_lines[-4:], line]
                status = process.wait()
            finally:
                _stop(process)
        if status == EXIT_BAD_INPUT:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"plateau-lstm {argv[0]} refused its input (exit 2), so no retry: "
                f"{_last_message(last_lines)}"
            )
        if status != 0:
            raise RuntimeError(
                f"plateau-lstm {argv[0]} failed with exit status {status}: "
                f"{_last_message(last_lines)}"
            )
        return json.loads(result_file.read_text())


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_message(lines: list[str]) -> str:
    return lines[-1] if lines else "(no output)"
