"""`prepare`: clean input becomes a verified prepared set; bad input gets one clear error."""

import json

import numpy as np
import pandas as pd
import pytest

from plateau_lstm.cli import main, sample_data_path
from plateau_lstm.config import PrepareConfig
from plateau_lstm.errors import UserError
from plateau_lstm.prepare import prepare
from plateau_lstm.prepared import load_prepared
from plateau_lstm.storage import open_store


def _hourly(rows=400, start="2024-01-01", **extra):
    index = pd.date_range(start, periods=rows, freq="h")
    t = np.arange(rows)
    frame = pd.DataFrame(
        {
            "date": index.strftime("%Y-%m-%d %H:%M:%S"),
            "temp": 10 + 5 * np.sin(2 * np.pi * t / 24) + 0.01 * t,
        }
    )
    for name, values in extra.items():
        frame[name] = values
    return frame


def _write(frame, path):
    frame.to_csv(path, index=False)
    return str(path)


def test_bundled_series_prepares_with_defaults(tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare(sample_data_path(), str(out), PrepareConfig(), window=48, horizon=1)
    assert manifest["columns"] == ["co2"]
    rows = manifest["rows"]
    assert rows["train"] > 4 * rows["test"] > 0
    assert manifest["filled_values"]["co2"] > 0  # the series has blank weeks
    data = load_prepared(open_store(str(out)))
    train_start, train_end = data.bounds["train"]
    # z-scored on the training part only
    train = data.values[train_start:train_end, 0]
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    assert data.timestamps.is_monotonic_increasing
    assert str(data.timestamps.tz) == "UTC"


def test_splits_are_chronological_and_scaler_sees_train_only(tmp_path):
    frame = _hourly(rows=300, load=np.arange(300) * 2.0)
    path = _write(frame, tmp_path / "in.csv")
    manifest = prepare(path, str(tmp_path / "p"), PrepareConfig(feature_cols=("load",)), 24, 1)
    assert manifest["columns"] == ["temp", "load"]
    assert manifest["rows"] == {"train": 210, "val": 45, "test": 45}
    ranges = manifest["time_range"]
    assert ranges["train"][1] < ranges["val"][0] and ranges["val"][1] < ranges["test"][0]
    # the load column rises 2 per row: its train mean is the mean of the first 210 rows only
    assert manifest["scaler"]["mean"]["load"] == pytest.approx(np.arange(210).mean() * 2)


def test_same_input_twice_gives_identical_bytes_and_keeps_the_first(tmp_path):
    path = _write(_hourly(), tmp_path / "in.csv")
    out = tmp_path / "p"
    prepare(path, str(out), PrepareConfig(), 24, 1)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    prepare(path, str(out), PrepareConfig(), 24, 1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_different_data_never_overwrites_a_prepared_set(tmp_path):
    out = tmp_path / "p"
    prepare(_write(_hourly(), tmp_path / "a.csv"), str(out), PrepareConfig(), 24, 1)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(UserError, match="already holds a different prepared data set"):
        prepare(_write(_hourly(rows=500), tmp_path / "b.csv"), str(out), PrepareConfig(), 24, 1)
    assert (out / "manifest.json").read_bytes() == before


def test_tampered_prepared_set_is_refused(tmp_path):
    out = tmp_path / "p"
    prepare(_write(_hourly(), tmp_path / "a.csv"), str(out), PrepareConfig(), 24, 1)
    (out / "test.parquet").write_bytes((out / "test.parquet").read_bytes()[:-3] + b"xyz")
    with pytest.raises(UserError, match="does not match the sha256"):
        load_prepared(open_store(str(out)))


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (
            lambda f: f.assign(temp=f["temp"].astype(object).where(f.index != 7, "12,5°")),
            "non-numeric value '12,5°' in column 'temp' at line 9",
        ),
        (
            lambda f: f.assign(date=f["date"].where(f.index != 3, "yesterday")),
            "cannot read timestamp 'yesterday' in column 'date' at line 5",
        ),
        (
            lambda f: f.assign(temp=np.where(f.index == 10, np.inf, f["temp"])),
            "infinite value in column 'temp' at line 12",
        ),
        (lambda f: f.assign(temp=np.nan), "has no values at all"),
        (lambda f: f.head(20), "need at least"),
        (lambda f: pd.concat([f, f.iloc[[5, 6]]]), "2 timestamps occur more than once"),
        (
            lambda f: f.assign(temp=np.where((f.index > 100) & (f.index < 140), np.nan, f["temp"])),
            "missing 39 consecutive steps",
        ),
    ],
)
def test_bad_input_gets_one_clear_message_and_writes_nothing(tmp_path, capsys, mutate, fragment):
    path = _write(mutate(_hourly()), tmp_path / "bad.csv")
    out = tmp_path / "p"
    code = main(["prepare", "--input", path, "--output", str(out), "--window", "24"])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_column_lists_the_columns_that_exist(tmp_path, capsys):
    path = _write(_hourly(), tmp_path / "in.csv")
    code = main(
        ["prepare", "--input", path, "--output", str(tmp_path / "p"), "--target-col", "tmp"]
    )
    assert code == 2
    assert (
        "column 'tmp' (--target-col) not found; the columns are: date, temp"
        in capsys.readouterr().err
    )


def test_missing_file_and_binary_file(tmp_path, capsys):
    assert (
        main(["prepare", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "p")])
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"\x00\x01\x02garbage")
    assert main(["prepare", "--input", str(binary), "--output", str(tmp_path / "p")]) == 2
    assert "not a text file" in capsys.readouterr().err


def test_short_gaps_are_filled_and_reported(tmp_path):
    frame = _hourly()
    frame.loc[50:52, "temp"] = np.nan
    frame = frame.drop(index=[80, 81])  # two missing time steps
    manifest = prepare(
        _write(frame, tmp_path / "in.csv"), str(tmp_path / "p"), PrepareConfig(), 24, 1
    )
    assert manifest["filled_values"]["temp"] == 5
    assert sum(manifest["rows"].values()) == 400
    assert json.dumps(manifest["cleaning"]).count("filled 5 missing values") == 1
