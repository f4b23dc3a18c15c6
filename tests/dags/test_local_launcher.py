"""The `local` launcher runs the real `plateau-lstm` CLI as a subprocess: its output lands in the
task log, its JSON result comes back, and its exit status decides whether a retry can help."""

from __future__ import annotations

import logging
import os

import pytest


def write_metrics(folder, test_mse: float) -> str:
    from plateau_lstm.storage import open_store

    open_store(str(folder)).write_json(
        "metrics.json", {"test_mse": test_mse, "persistence_mse": 1.0, "model": "m"}
    )
    return str(folder)


def test_result_and_output_come_back(tmp_path, caplog):
    from lstm_retrain.local import run_cli

    candidate = write_metrics(tmp_path / "runs" / "r1" / "eval", 0.5)

    with caplog.at_level(logging.INFO, logger="lstm_retrain.local"):
        result = run_cli(["promote", "--candidate", candidate, "--registry", str(tmp_path)])

    assert result == {
        "promoted": True,
        "reason": "no champion yet; candidate test MSE 0.50000 beats persistence 1.00000",
    }
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Running: ") and "plateau_lstm.cli" in m for m in logged)
    assert f"promote: promoted: {result['reason']}" in logged  # the CLI's own log line
    assert (tmp_path / "champion.json").is_file()


def test_bad_input_fails_the_task_without_retries(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException
    from lstm_retrain.local import run_cli

    with pytest.raises(
        AirflowFailException, match=r"refused its input \(exit 2\), so no retry"
    ) as e:
        run_cli(["promote", "--candidate", str(tmp_path / "nope"), "--registry", str(tmp_path)])
    assert "no metrics.json" in str(e.value)


def test_other_failures_are_retried(tmp_path, s3_env):
    """Storage that cannot be reached (exit 1) may work on the next try: a plain error."""
    from airflow.sdk.exceptions import AirflowFailException
    from lstm_retrain.local import run_cli

    unreachable = {
        **os.environ,
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
    }
    with pytest.raises(RuntimeError, match="failed with exit status 1") as e:
        run_cli(["promote", "--candidate", f"{s3_env}/eval", "--registry", s3_env], env=unreachable)
    assert not isinstance(e.value, AirflowFailException)
