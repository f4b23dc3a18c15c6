"""`prepare`: clean input becomes a verified prepared set, and every silent fix is reported."""

import hashlib
import json
import logging
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from plateau_lstm.cli import main
from plateau_lstm.config import PrepareConfig
from plateau_lstm.errors import UserError
from plateau_lstm.prepare import prepare
from plateau_lstm.prepared import load_prepared
from plateau_lstm.storage import open_store
from plateau_lstm.windows import make_dataset


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


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _original_units(data, column: str) -> np.ndarray:
    """The prepared column back in the raw file's units."""
    index = data.columns.index(column)
    return data.values[:, index] * data.scaler.std[column] + data.scaler.mean[column]


@pytest.fixture
def info_log(caplog):
    caplog.set_level(logging.INFO, logger="plateau_lstm")
    return caplog


# ------------------------------------------------------------------------------------------
# The bundled series and the manifest


def test_bundled_weekly_series_with_blank_weeks_prepares_with_a_fill_report(tmp_path, info_log):
    out = tmp_path / "prepared"
    assert main(["prepare", "--output", str(out)]) == 0
    # the CSV has 59 blank weeks, the longest run 18 weeks: all within --max-gap 24
    assert "filled 59 missing values by time interpolation (co2: 59)" in info_log.text
    assert "timestamps carry no time zone; taken as UTC" in info_log.text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filled_values"] == {"co2": 59}
    assert manifest["freq"] == "7D"
    assert manifest["columns"] == ["co2"]
    assert manifest["rows"] == {"train": 1598, "val": 342, "test": 344}
    assert manifest["time_range"]["train"][0] == "1958-03-29 00:00:00+00:00"
    assert manifest["time_range"]["test"][1] == "2001-12-29 00:00:00+00:00"
    data = load_prepared(open_store(str(out)))
    train_start, train_end = data.bounds["train"]
    # z-scored on the training part only
    train = data.values[train_start:train_end, 0]
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    assert data.timestamps.is_monotonic_increasing
    assert str(data.timestamps.tz) == "UTC"
    # a blank week is interpolated in time between its neighbours (1958-05-10: 316.9, 317.5)
    co2 = _original_units(data, "co2")
    week = data.timestamps.get_loc(pd.Timestamp("1958-05-10", tz="UTC"))
    assert co2[week] == pytest.approx((316.9 + 317.5) / 2, abs=1e-3)


def test_manifest_records_source_splits_fills_scaler_options_and_every_file(tmp_path):
    frame = _hourly(load=np.arange(400) * 2.0 + 1)
    frame.loc[50:52, "temp"] = np.nan
    raw = tmp_path / "in.csv"
    _write(frame, raw)
    out = tmp_path / "p"
    config = PrepareConfig(feature_cols=("load",), max_gap=5)
    manifest = prepare(str(raw), str(out), config, window=24, horizon=2)

    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["source"] == {
        "uri": str(raw),
        "sha256": _sha256(raw),
        "format": "csv",
        "rows": 400,
    }
    assert manifest["columns"] == ["temp", "load"]
    assert manifest["timestamp_column"] == "date"
    assert manifest["freq"] == "h"
    assert manifest["rows"] == {"train": 280, "val": 60, "test": 60}
    assert manifest["time_range"] == {
        "train": ["2024-01-01 00:00:00+00:00", "2024-01-12 15:00:00+00:00"],
        "val": ["2024-01-12 16:00:00+00:00", "2024-01-15 03:00:00+00:00"],
        "test": ["2024-01-15 04:00:00+00:00", "2024-01-17 15:00:00+00:00"],
    }
    assert manifest["filled_values"] == {"temp": 3, "load": 0}
    assert "filled 3 missing values by time interpolation (temp: 3)" in manifest["cleaning"]
    train = frame.iloc[:280].copy()
    train["temp"] = train["temp"].interpolate()
    assert manifest["scaler"]["mean"] == pytest.approx(
        {"temp": train["temp"].mean(), "load": train["load"].mean()}
    )
    assert manifest["scaler"]["std"] == pytest.approx(
        {"temp": train["temp"].std(ddof=0), "load": train["load"].std(ddof=0)}
    )
    assert json.loads((out / "scaler.json").read_text()) == manifest["scaler"]
    assert manifest["options"] == {
        "timestamp_col": None,
        "target_col": None,
        "feature_cols": ["load"],
        "train_fraction": 0.7,
        "val_fraction": 0.15,
        "max_gap": 5,
        "on_duplicate": "error",
        "freq": None,
        "window": 24,
        "horizon": 2,
    }
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "manifest.json",
        "scaler.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ]
    assert manifest["files"] == {
        name: {"sha256": _sha256(out / name), "bytes": (out / name).stat().st_size}
        for name in written
        if name != "manifest.json"
    }


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


# ------------------------------------------------------------------------------------------
# Whole or nothing, and byte-identical


def test_same_input_gives_byte_identical_sets_and_a_rerun_keeps_the_first(tmp_path):
    path = _write(_hourly(load=np.cos(np.arange(400))), tmp_path / "in.csv")
    config = PrepareConfig(feature_cols=("load",))
    prepare(path, str(tmp_path / "a"), config, 24, 1)
    prepare(path, str(tmp_path / "b"), config, 24, 1)
    first = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == first
    modified = (tmp_path / "a" / "manifest.json").stat().st_mtime_ns
    prepare(path, str(tmp_path / "a"), config, 24, 1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == first
    assert (tmp_path / "a" / "manifest.json").stat().st_mtime_ns == modified


def test_different_data_never_overwrites_a_prepared_set(tmp_path):
    out = tmp_path / "p"
    prepare(_write(_hourly(), tmp_path / "a.csv"), str(out), PrepareConfig(), 24, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="already holds a different prepared data set"):
        prepare(_write(_hourly(rows=500), tmp_path / "b.csv"), str(out), PrepareConfig(), 24, 1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_output_files_hold_utc_times_and_float32_columns_target_first(tmp_path):
    path = _write(_hourly(load=np.arange(400.0)), tmp_path / "in.csv")
    prepare(path, str(tmp_path / "p"), PrepareConfig(feature_cols=("load",)), 24, 1)
    schema = pq.read_schema(tmp_path / "p" / "train.parquet")
    assert schema.names == ["timestamp", "temp", "load"]
    assert [str(t) for t in schema.types] == ["timestamp[us, tz=UTC]", "float", "float"]


# ------------------------------------------------------------------------------------------
# Cleaning that needs no flag


def test_time_zone_offsets_become_utc(tmp_path, info_log):
    # Berlin local time across the spring DST change: offsets +01:00, then +02:00
    local = pd.date_range("2024-03-29", periods=400, freq="h", tz="Europe/Berlin")
    frame = pd.DataFrame({"time": [t.isoformat() for t in local], "load": np.sin(np.arange(400))})
    assert frame["time"].str.endswith("+01:00").any() and frame["time"].str.endswith("+02:00").any()
    out = tmp_path / "p"
    manifest = prepare(_write(frame, tmp_path / "in.csv"), str(out), PrepareConfig(), 24, 1)
    assert "timestamps with time zone offsets converted to UTC" in manifest["cleaning"]
    assert manifest["time_range"]["train"][0] == "2024-03-28 23:00:00+00:00"
    assert manifest["freq"] == "h" and manifest["filled_values"] == {"load": 0}
    data = load_prepared(open_store(str(out)))
    assert data.timestamps.equals(local.tz_convert("UTC").as_unit("us"))


def test_time_zone_offsets_in_parquet_text_and_mixed_offsets(tmp_path):
    # a Parquet file whose times are text with two different offsets for the same instants
    times = pd.date_range("2024-06-01", periods=200, freq="h", tz="UTC")
    text = [
        (t.tz_convert("Asia/Kolkata") if i % 2 else t.tz_convert("America/New_York")).isoformat()
        for i, t in enumerate(times)
    ]
    frame = pd.DataFrame({"ds": text, "y": np.cos(np.arange(200))})
    frame.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "p"
    manifest = prepare(str(tmp_path / "in.parquet"), str(out), PrepareConfig(), 24, 1)
    assert manifest["source"]["format"] == "parquet"
    data = load_prepared(open_store(str(out)))
    assert data.timestamps.equals(times.as_unit("us"))


def test_parquet_with_zoned_times_and_integer_columns_with_blanks(tmp_path):
    local = pd.date_range("2024-10-26", periods=300, freq="h", tz="Europe/Berlin")  # DST ends
    frame = pd.DataFrame(
        {
            "when": local,
            "count": pd.array([i % 17 if i != 40 else None for i in range(300)], dtype="Int64"),
        }
    )
    frame.to_parquet(tmp_path / "in.parquet")
    manifest = prepare(str(tmp_path / "in.parquet"), str(tmp_path / "p"), PrepareConfig(), 24, 1)
    assert manifest["timestamp_column"] == "when" and manifest["columns"] == ["count"]
    assert manifest["filled_values"] == {"count": 1}
    assert "timestamps with time zone offsets converted to UTC" in manifest["cleaning"]
    data = load_prepared(open_store(str(tmp_path / "p")))
    assert data.timestamps.equals(local.tz_convert("UTC").as_unit("us"))
    np.testing.assert_allclose(_original_units(data, "count")[[39, 40, 41]], [5, 6, 7], atol=1e-4)


def test_unsorted_rows_are_sorted_and_reported(tmp_path):
    frame = _hourly(load=np.arange(400.0))
    shuffled = frame.sample(frac=1, random_state=1)
    sorted_set = prepare(
        _write(frame, tmp_path / "sorted.csv"),
        str(tmp_path / "a"),
        PrepareConfig(feature_cols=("load",)),
        24,
        1,
    )
    manifest = prepare(
        _write(shuffled, tmp_path / "shuffled.csv"),
        str(tmp_path / "b"),
        PrepareConfig(feature_cols=("load",)),
        24,
        1,
    )
    # the first row that goes back in time is data row 1 or later, at file line 3 or later
    first_back = int(np.flatnonzero(np.diff(shuffled.index.to_numpy()) < 0)[0]) + 3
    assert (
        f"rows were not in time order (first at line {first_back}); sorted them"
        in (manifest["cleaning"])
    )
    # the same rows give the same prepared data, whatever their order in the file
    for split in ("train", "val", "test"):
        assert manifest["files"][f"{split}.parquet"] == sorted_set["files"][f"{split}.parquet"]


def test_irregular_spacing_is_resampled_to_the_inferred_step_and_reported(tmp_path):
    rng = np.random.default_rng(4)
    frame = _hourly()
    jitter = pd.to_timedelta(rng.integers(-600, 600, size=400), unit="s")
    frame["date"] = (pd.to_datetime(frame["date"]) + jitter).dt.strftime("%Y-%m-%d %H:%M:%S")
    manifest = prepare(
        _write(frame, tmp_path / "in.csv"), str(tmp_path / "p"), PrepareConfig(), 24, 1
    )
    assert manifest["freq"] == "h"
    assert (
        "irregular spacing; resampled 400 rows to 400 steps of h (mean of the rows nearest "
        "each step; --freq chooses the step)" in manifest["cleaning"]
    )
    # every reading landed on the hour it was meant for, unchanged
    data = load_prepared(open_store(str(tmp_path / "p")))
    np.testing.assert_allclose(_original_units(data, "temp"), frame["temp"], rtol=1e-6)
    assert data.timestamps[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_freq_option_resamples_to_the_given_step(tmp_path):
    frame = _hourly(rows=800)
    manifest = prepare(
        _write(frame, tmp_path / "in.csv"), str(tmp_path / "p"), PrepareConfig(freq="2h"), 24, 1
    )
    assert manifest["freq"] == "2h"
    assert (
        "--freq 2h; resampled 800 rows to 401 steps of 2h (mean of the rows nearest each step; "
        "--freq chooses the step)" in manifest["cleaning"]
    )
    data = load_prepared(open_store(str(tmp_path / "p")))
    assert len(data.values) == 401
    assert data.timestamps[1] - data.timestamps[0] == pd.Timedelta(hours=2)
    # the step at 2 h averages the readings of 1 h and 2 h (an hour either way rounds up)
    temp = frame["temp"].to_numpy()
    np.testing.assert_allclose(
        _original_units(data, "temp")[:3], [temp[0], temp[1:3].mean(), temp[3:5].mean()], rtol=1e-6
    )


def test_short_gaps_are_filled_in_time_and_reported(tmp_path, info_log):
    frame = _hourly()
    frame.loc[50:52, "temp"] = np.nan  # three blank cells
    frame = frame.drop(index=[80, 81])  # two missing time steps
    manifest = prepare(
        _write(frame, tmp_path / "in.csv"), str(tmp_path / "p"), PrepareConfig(), 24, 1
    )
    assert manifest["filled_values"]["temp"] == 5
    assert sum(manifest["rows"].values()) == 400
    assert "2 time steps of h had no row" in manifest["cleaning"]
    assert "filled 5 missing values by time interpolation (temp: 5)" in info_log.text
    data = load_prepared(open_store(str(tmp_path / "p")))
    temp = _original_units(data, "temp")
    expected = np.interp([80, 81], [79, 82], frame.set_index(frame.index)["temp"].loc[[79, 82]])
    np.testing.assert_allclose(temp[[80, 81]], expected, rtol=1e-6)


def test_leading_and_trailing_blanks_are_dropped_and_reported(tmp_path):
    frame = _hourly()
    frame.loc[:2, "temp"] = np.nan
    frame.loc[398:, "temp"] = np.nan
    manifest = prepare(
        _write(frame, tmp_path / "in.csv"), str(tmp_path / "p"), PrepareConfig(), 24, 1
    )
    assert "dropped 5 leading/trailing rows with missing values" in manifest["cleaning"]
    assert sum(manifest["rows"].values()) == 395
    assert manifest["time_range"]["train"][0] == "2024-01-01 03:00:00+00:00"


@pytest.mark.parametrize(
    "policy,expected",
    [("last", [20.0, 31.0]), ("mean", [15.0, 25.5])],
)
def test_on_duplicate_last_or_mean_merges_and_reports(tmp_path, policy, expected):
    frame = _hourly()
    frame.loc[5, "temp"], frame.loc[6, "temp"] = 10.0, 20.0
    extra = pd.DataFrame({"date": frame["date"].iloc[[5, 6]], "temp": [20.0, 31.0]})
    frame = pd.concat([frame.iloc[:100], extra, frame.iloc[100:]])
    manifest = prepare(
        _write(frame, tmp_path / "in.csv"),
        str(tmp_path / "p"),
        PrepareConfig(on_duplicate=policy),
        24,
        1,
    )
    assert (
        f"merged 2 rows with duplicate timestamps (--on-duplicate {policy})"
        in (manifest["cleaning"])
    )
    data = load_prepared(open_store(str(tmp_path / "p")))
    assert len(data.values) == 400
    np.testing.assert_allclose(_original_units(data, "temp")[[5, 6]], expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Multivariate


def test_features_are_scaled_per_column_on_train_and_the_target_is_an_input_too(tmp_path):
    t = np.arange(500.0)
    frame = _hourly(rows=500, load=1000 + 50 * np.cos(t / 7), humidity=0.3 + 0.001 * t)
    out = tmp_path / "p"
    config = PrepareConfig(target_col="temp", feature_cols=("load", "temp", "humidity"))
    manifest = prepare(_write(frame, tmp_path / "in.csv"), str(out), config, 24, 1)
    assert manifest["columns"] == ["temp", "load", "humidity"]  # the target once, first
    data = load_prepared(open_store(str(out)))
    start, end = data.bounds["train"]
    train = data.values[start:end].astype("float64")
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)
    for column in ("load", "humidity"):
        raw = frame[column].to_numpy()
        assert manifest["scaler"]["mean"][column] == pytest.approx(raw[start:end].mean())
        assert manifest["scaler"]["std"][column] == pytest.approx(raw[start:end].std())
    # humidity rises steadily: on val and test it lies above anything seen in training
    assert data.values[data.bounds["test"][0] :, 2].min() > train[:, 2].max()
    inputs, target = next(
        iter(make_dataset(data.values, start, end, window=24, horizon=1, batch_size=8))
    )
    assert inputs.shape == (8, 24, 3)
    # the target column is an input: the window's target row is the next row's column 0
    np.testing.assert_array_equal(inputs[:, :, 0].numpy()[1:, -1], target.numpy()[:-1, 0])


# ------------------------------------------------------------------------------------------
# Input and output through the artifact store on S3


def test_s3_input_and_output_through_the_artifact_store(s3_env, tmp_path, info_log):
    raw = tmp_path / "in.csv"
    frame = _hourly()
    frame.loc[10, "temp"] = np.nan
    _write(frame, raw)
    bucket = open_store(s3_env)
    bucket.upload_file(raw, "raw/hourly.csv")
    output = f"{s3_env}/runs/r1/prepared"
    code = main(
        ["prepare", "--input", f"{s3_env}/raw/hourly.csv", "--output", output, "--window", "24"]
    )
    assert code == 0
    data = load_prepared(open_store(output))
    assert data.manifest["source"]["uri"] == f"{s3_env}/raw/hourly.csv"
    assert data.manifest["source"]["sha256"] == _sha256(raw)
    assert data.manifest["filled_values"] == {"temp": 1}
    assert sorted(bucket.list("runs/r1/prepared")) == [
        f"runs/r1/prepared/{name}"
        for name in ("manifest.json", "scaler.json", "test.parquet", "train.parquet", "val.parquet")
    ]
    # the same prepare from a local copy of the same bytes gives the same data files
    local = prepare(str(raw), str(tmp_path / "local"), PrepareConfig(), 24, 1)
    assert local["files"] == data.manifest["files"]


def test_bad_s3_input_writes_nothing_to_s3(s3_env, tmp_path, capsys):
    frame = _hourly()
    frame["temp"] = frame["temp"].astype(object)
    frame.loc[20, "temp"] = "n/a?"
    bucket = open_store(s3_env)
    bucket.write_bytes("raw/bad.csv", frame.to_csv(index=False).encode())
    code = main(
        ["prepare", "--input", f"{s3_env}/raw/bad.csv", "--output", f"{s3_env}/runs/r1/prepared"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{s3_env}/raw/bad.csv: non-numeric value 'n/a?' in column 'temp' at line 22" in err
    assert bucket.list("runs") == []
    assert (
        main(["prepare", "--input", f"{s3_env}/raw/none.csv", "--output", str(tmp_path / "p")]) == 2
    )
    assert f"{s3_env}/raw/none.csv: no such object. Check the --input URI." in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------------------
# train and evaluate use a prepared set only when its manifest verifies


@pytest.fixture
def prepared_set(tmp_path):
    out = tmp_path / "runs" / "r1" / "prepared"
    prepare(_write(_hourly(), tmp_path / "in.csv"), str(out), PrepareConfig(), 24, 1)
    return out


def test_train_and_evaluate_refuse_a_set_changed_after_prepare(prepared_set, capsys):
    test_file = prepared_set / "test.parquet"
    test_file.write_bytes(test_file.read_bytes()[:-3] + b"xyz")
    model = prepared_set.parent / "model"
    code = main(
        ["train", "--prepared", str(prepared_set), "--output", str(model), "--window", "24"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"plateau-lstm train: error: {prepared_set}: test.parquet does not match the sha256 in "
        "manifest.json (changed or damaged after prepare). Prepare the data again."
    )
    assert "Traceback" not in err
    assert not model.exists()
    code = main(
        [
            "evaluate",
            "--prepared",
            str(prepared_set),
            "--model",
            str(model),
            "--output",
            str(prepared_set.parent / "eval"),
        ]
    )
    assert code == 2
    assert "test.parquet does not match the sha256 in manifest.json" in capsys.readouterr().err
    assert not (prepared_set.parent / "eval").exists()


@pytest.mark.parametrize(
    "damage,fragment",
    [
        (lambda p: (p / "manifest.json").unlink(), "not a prepared data set (no manifest.json)"),
        (
            lambda p: (p / "val.parquet").unlink(),
            "val.parquet is listed in manifest.json but missing",
        ),
        (
            lambda p: (p / "scaler.json").write_text('{"mean": {}, "std": {}}'),
            "scaler.json does not match the sha256 in manifest.json",
        ),
        (
            lambda p: (p / "manifest.json").write_text('{"files": '),
            "manifest.json is not valid JSON (",
        ),
        (
            lambda p: _edit_manifest(p, lambda m: m["files"].pop("train.parquet")),
            "manifest.json does not list train.parquet",
        ),
        (
            lambda p: _edit_manifest(p, lambda m: m.update(format_version=99)),
            "manifest.json has format_version 99; this plateau-lstm reads 1",
        ),
    ],
)
def test_a_prepared_set_that_does_not_verify_is_refused(prepared_set, damage, fragment):
    damage(prepared_set)
    with pytest.raises(UserError, match=re.escape(fragment)):
        load_prepared(open_store(str(prepared_set)))


def _edit_manifest(folder, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
