"""The promotion gate: champion.json moves only for a candidate better by the margin than the
champion and better than persistence; the move is atomic; anything else leaves it as it was."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from plateau_lstm.cli import main
from plateau_lstm.errors import UserError
from plateau_lstm.promote import CHAMPION_FILE, decide, promote
from plateau_lstm.storage import open_store

PERSISTENCE = 1.0


def write_candidate(root: str, run: str, test_mse: float, persistence: float = PERSISTENCE) -> str:
    """A run's eval folder with the metrics.json fields the gate reads, as evaluate writes it."""
    eval_uri = f"{root.rstrip('/')}/runs/{run}/eval"
    metrics = {
        "test_mse": test_mse,
        "persistence_mse": persistence,
        "skill_vs_persistence": 1 - test_mse / persistence,
        "model": f"{root.rstrip('/')}/runs/{run}/model",
    }
    open_store(eval_uri).write_json("metrics.json", metrics)
    return eval_uri


def champion_of(root: str) -> dict:
    return open_store(root).read_json(CHAMPION_FILE)


def champion_bytes(root: str) -> bytes:
    return open_store(root).read_bytes(CHAMPION_FILE)


def champion_record(test_mse: float, metrics_uri: str = "s3://b/runs/old/eval/metrics.json"):
    return {"metrics_uri": metrics_uri, "metrics": {"test_mse": test_mse}}


# ------------------------------------------------------------------------------------------------
# The decision


@pytest.mark.parametrize(
    ("test_mse", "champion_mse", "margin", "promoted", "reason_part"),
    [
        (0.5, None, 0.01, True, "no champion yet"),
        (PERSISTENCE, None, 0.01, False, "does not beat persistence"),  # a tie is not a win
        (1.2, None, 0.01, False, "does not beat persistence"),
        (math.nan, None, 0.01, False, "does not beat persistence"),
        (0.5, 0.6, 0.01, True, "beats the champion's"),
        (0.595, 0.6, 0.01, False, "by 1%"),  # better, but within the margin
        (0.594, 0.6, 0.01, False, "needs < 0.59400"),  # exactly at the bar is not below it
        (0.5939, 0.6, 0.01, True, "beats the champion's"),
        (0.59, 0.6, 0.0, True, "beats the champion's"),  # margin 0: strictly better is enough
        (0.6, 0.6, 0.0, False, "does not beat the champion's"),
        (0.4, 0.3, 0.01, False, "does not beat the champion's"),
        (1.1, 1.5, 0.01, False, "does not beat persistence"),  # beats the champion only
    ],
)
def test_decide(test_mse, champion_mse, margin, promoted, reason_part):
    candidate = {"test_mse": test_mse, "persistence_mse": PERSISTENCE}
    champion = None if champion_mse is None else champion_record(champion_mse)

    decision, reason = decide(candidate, champion, margin)

    assert decision is promoted
    assert reason_part in reason
    assert "\n" not in reason


def test_decide_keeps_a_champion_promoted_again_by_a_retry():
    uri = "s3://b/runs/r1/eval/metrics.json"
    decision, reason = decide(
        {"test_mse": 0.1, "persistence_mse": PERSISTENCE},
        champion_record(0.5, metrics_uri=uri),
        0.01,
        metrics_uri=uri,
    )
    assert (decision, reason) == (False, f"candidate {uri} is already the champion")


# ------------------------------------------------------------------------------------------------
# The registry, on a local root and on S3


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_env") + "/registry"
    return str(tmp_path / "artifacts")


def test_first_good_candidate_becomes_champion(root):
    eval_uri = write_candidate(root, "r1", 0.5)

    outcome = promote(eval_uri, root)

    assert outcome["promoted"] is True
    record = champion_of(root)
    assert record == outcome["champion"]
    assert record["metrics_uri"] == f"{eval_uri}/metrics.json"
    assert record["model"] == f"{root}/runs/r1/model"
    assert record["metrics"]["test_mse"] == 0.5
    assert record["previous"] is None
    assert record["margin"] == 0.01


def test_candidate_that_does_not_beat_persistence_creates_no_champion(root):
    outcome = promote(write_candidate(root, "r1", 1.3), root)

    assert outcome == {
        "promoted": False,
        "reason": "candidate test MSE 1.30000 does not beat persistence 1.00000",
        "champion": None,
    }
    assert not open_store(root).exists(CHAMPION_FILE)


def test_second_worse_run_leaves_the_champion_unchanged(root):
    promote(write_candidate(root, "r1", 0.5), root)
    before = champion_bytes(root)

    worse = promote(write_candidate(root, "r2", 0.55), root)
    within_margin = promote(write_candidate(root, "r3", 0.4990), root)

    assert worse["promoted"] is False
    assert "does not beat the champion's 0.50000" in worse["reason"]
    assert within_margin["promoted"] is False
    assert champion_bytes(root) == before
    assert worse["champion"]["metrics_uri"].endswith("/runs/r1/eval/metrics.json")


def test_better_run_replaces_the_champion_and_keeps_one_previous(root):
    promote(write_candidate(root, "r1", 0.5), root)
    promote(write_candidate(root, "r2", 0.4), root)

    outcome = promote(write_candidate(root, "r3", 0.3), root)

    assert outcome["promoted"] is True
    record = champion_of(root)
    assert record["metrics_uri"].endswith("/runs/r3/eval/metrics.json")
    assert record["previous"]["metrics_uri"].endswith("/runs/r2/eval/metrics.json")
    assert "previous" not in record["previous"]  # one step of history, not a growing chain


def test_retried_promotion_changes_nothing(root):
    eval_uri = write_candidate(root, "r1", 0.5)
    promote(eval_uri, root)
    before = champion_bytes(root)

    again = promote(eval_uri, root)

    assert again["promoted"] is False
    assert again["reason"].endswith("is already the champion")
    assert champion_bytes(root) == before


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"persistence_mse": 1.0}, "test_mse must be a number. Received: test_mse=None"),
        ({"test_mse": "0.1", "persistence_mse": 1.0}, "test_mse must be a number"),
        ({"test_mse": 0.1, "persistence_mse": math.inf}, "persistence_mse must be finite"),
    ],
)
def test_malformed_metrics_are_refused_by_name(tmp_path, metrics, message):
    root = str(tmp_path)
    open_store(f"{root}/runs/r1/eval").write_json("metrics.json", metrics)

    with pytest.raises(UserError, match=message):
        promote(f"{root}/runs/r1/eval", root)
    assert not (tmp_path / CHAMPION_FILE).exists()


def test_missing_metrics_and_bad_margin_are_refused(tmp_path):
    with pytest.raises(UserError, match="no metrics.json"):
        promote(str(tmp_path / "runs/r1/eval"), str(tmp_path))
    eval_uri = write_candidate(str(tmp_path), "r1", 0.5)
    for margin in (-0.1, 1.0):
        with pytest.raises(UserError, match=r"--margin must lie in \[0, 1\)"):
            promote(eval_uri, str(tmp_path), margin=margin)


# ------------------------------------------------------------------------------------------------
# Atomicity


def test_readers_never_see_a_partial_champion(tmp_path):
    """A reader polling champion.json during many promotions always parses a whole record."""
    root = str(tmp_path)
    candidates = [write_candidate(root, f"r{i}", 0.9 * 0.9**i) for i in range(40)]
    promote(candidates[0], root)
    seen: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read_continuously() -> None:
        path = tmp_path / CHAMPION_FILE
        while not done.is_set():
            try:
                seen.append(json.loads(path.read_bytes())["metrics_uri"])
            except BaseException as err:  # a torn or missing file would land here
                errors.append(err)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for uri in candidates[1:]:
            assert promote(uri, root)["promoted"] is True
    finally:
        done.set()
        reader.join()

    assert errors == []
    assert len(seen) > 0
    assert champion_of(root)["metrics_uri"] == f"{candidates[-1]}/metrics.json"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_write_that_dies_leaves_the_old_champion(tmp_path, monkeypatch):
    """The new record is built aside and renamed into place; a crash before the rename
    (simulated: the rename fails) leaves the previous champion byte for byte, and no debris."""
    root = str(tmp_path)
    promote(write_candidate(root, "r1", 0.5), root)
    before = champion_bytes(root)
    better = write_candidate(root, "r2", 0.1)

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Exception, match="No space left on device"):
        promote(better, root)
    monkeypatch.undo()

    assert champion_bytes(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHAMPION_FILE, "runs"]


# ------------------------------------------------------------------------------------------------
# The command


def test_promoting_needs_no_tensorflow():
    """The gate runs in a small pod: importing it must not pull TensorFlow in (seconds, GiBs)."""
    code = (
        "import sys, plateau_lstm.promote, plateau_lstm.evaluate as e;"
        "assert plateau_lstm.promote.METRICS_FILE == e.METRICS_FILE"
    )
    probe = (
        "import sys, plateau_lstm.promote;"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_says_why_in_one_line_and_succeeds_when_not_promoted(tmp_path, capsys):
    root = str(tmp_path)
    assert (
        main(["promote", "--candidate", write_candidate(root, "r1", 0.5), "--registry", root]) == 0
    )
    capsys.readouterr()
    result_file = tmp_path / "result" / "return.json"

    status = main(
        [
            "--result-file",
            str(result_file),
            "promote",
            "--candidate",
            write_candidate(root, "r2", 0.7),
            "--registry",
            root,
        ]
    )

    out = capsys.readouterr().out
    assert status == 0
    printed = json.loads(out)
    assert printed["promoted"] is False
    assert "does not beat the champion's 0.50000" in printed["reason"]
    assert json.loads(result_file.read_text()) == printed
    assert champion_of(root)["metrics_uri"].endswith("/runs/r1/eval/metrics.json")


def test_cli_refuses_a_missing_candidate_with_exit_2(tmp_path, capsys):
    missing = Path(tmp_path, "runs", "nope", "eval")
    status = main(["promote", "--candidate", str(missing), "--registry", str(tmp_path)])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("plateau-lstm promote: error: ")
    assert "no metrics.json" in err
    assert "Traceback" not in err
