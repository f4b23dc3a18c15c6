import json
import logging
import math

import numpy as np
import pytest

from plateau_lstm.events import EventLog


def test_record_keeps_logs_and_appends_one_json_line(tmp_path, caplog):
    path = tmp_path / "model" / "events.jsonl"
    log = EventLog(path)
    with caplog.at_level(logging.INFO, logger="plateau_lstm"):
        event = log.record("lr_restart", 3, "LR restart #1 at epoch 3", peak=np.float32(3e-3))
        log.record("loss_switch", 3, "Loss switch #1 at epoch 3", to_loss="mse")

    assert "LR restart #1 at epoch 3" in caplog.messages
    assert event["kind"] == "lr_restart" and event["epoch"] == 3
    assert isinstance(event["time"], float) and event["time"] > 0
    assert log.events[0] is event
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == "LR restart #1 at epoch 3"
    assert first["peak"] == pytest.approx(3e-3)
    assert EventLog.load(path) == [json.loads(line) for line in lines]


def test_counts_by_kind():
    log = EventLog()
    for kind in ("plateau", "lr_restart", "plateau"):
        log.record(kind, 1, kind)
    assert log.counts() == {"plateau": 2, "lr_restart": 1}


def test_a_second_log_on_the_same_file_appends(tmp_path):
    path = tmp_path / "events.jsonl"
    EventLog(path).record("plateau", 1, "first")
    EventLog(path).record("plateau", 2, "second")
    assert [event["message"] for event in EventLog.load(path)] == ["first", "second"]


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.record("nan_recovery", 4, "NaN", loss=float("nan"), best=np.float32("inf"))
    (event,) = EventLog.load(path)
    assert event["loss"] is None and event["best"] is None
    assert log.events[0]["loss"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in event.values())


def test_load_skips_a_torn_last_line_and_rejects_a_bad_middle_line(tmp_path):
    path = tmp_path / "events.jsonl"
    good = json.dumps({"kind": "plateau", "epoch": 1})
    path.write_text(good + "\n\n" + '{"kind": "pla')
    assert EventLog.load(path) == [{"kind": "plateau", "epoch": 1}]

    path.write_text('{"kind"\n' + good + "\n")
    with pytest.raises(ValueError, match="line 1"):
        EventLog.load(path)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="Received: path=3"):
        EventLog(3)
    with pytest.raises(ValueError, match="Received: kind=''"):
        EventLog().record("", 1, "empty kind")
