"""Properties of prepare that hold for any series: time order, and a scaler blind to the future."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_lstm.config import PrepareConfig
from plateau_lstm.errors import UserError
from plateau_lstm.prepare import minimum_rows, prepare, split_bounds
from plateau_lstm.prepared import load_prepared
from plateau_lstm.storage import open_store

fractions = st.tuples(st.floats(0.3, 0.8), st.floats(0.05, 0.3)).filter(
    lambda f: f[0] + f[1] <= 0.95
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 5000),
    split=fractions,
    window=st.integers(1, 200),
    horizon=st.integers(1, 48),
)
def test_splits_tile_the_rows_in_order_or_say_how_many_are_needed(rows, split, window, horizon):
    config = PrepareConfig(train_fraction=split[0], val_fraction=split[1])
    needed = minimum_rows(config, window, horizon)
    if rows < needed:
        with pytest.raises(UserError, match=f"need at least {needed}\\b"):
            split_bounds(rows, config, window, horizon, "x.csv")
        return
    bounds = split_bounds(rows, config, window, horizon, "x.csv")
    (a, b), (c, d), (e, f) = bounds["train"], bounds["val"], bounds["test"]
    assert a == 0 and b == c and d == e and f == rows  # no gap, no overlap, every row
    assert a < b < d < f  # every part has rows, oldest first
    assert b >= window + horizon  # at least one training window


series = st.integers(60, 160).flatmap(
    lambda rows: st.tuples(
        st.just(rows),
        st.lists(st.floats(-1e6, 1e6), min_size=rows, max_size=rows).filter(
            lambda v: np.ptp(v[: int(rows * 0.3)]) > 1e-3
        ),
        st.permutations(range(rows)),
    )
)


def _prepare(folder: Path, times, values, order, config, name):
    frame = pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%S"), "value": values})
    source = folder / f"{name}.csv"
    frame.iloc[list(order)].to_csv(source, index=False)
    out = folder / name
    manifest = prepare(str(source), str(out), config, window=4, horizon=1)
    return manifest, load_prepared(open_store(str(out))), out


@settings(max_examples=12, deadline=None)
@given(data=series, split=fractions, future=st.floats(-1e9, 1e9))
def test_splits_keep_time_order_and_the_scaler_never_sees_validation_or_test_rows(
    data, split, future
):
    rows, values, order = data
    values = np.asarray(values)
    times = pd.date_range("2024-01-01", periods=rows, freq="15min")
    config = PrepareConfig(train_fraction=split[0], val_fraction=split[1])
    with tempfile.TemporaryDirectory() as folder:
        manifest, prepared, out = _prepare(Path(folder), times, values, order, config, "a")

        # every row once, oldest first, whatever the order of the file; splits in time order
        assert prepared.timestamps.equals(times.tz_localize("UTC").as_unit("us"))
        (_, train_end), (val_start, val_end), (test_start, _) = prepared.bounds.values()
        assert train_end == val_start and val_end == test_start
        ranges = manifest["time_range"]
        assert ranges["train"][1] < ranges["val"][0] <= ranges["val"][1] < ranges["test"][0]

        # the scaler is exactly the training rows' mean and standard deviation
        train = values[:train_end]
        assert manifest["scaler"]["mean"]["value"] == pytest.approx(train.mean(), abs=1e-9)
        assert manifest["scaler"]["std"]["value"] == pytest.approx(train.std(), rel=1e-9)

        # ... and nothing about later rows reaches it or the training file
        changed = values.copy()
        changed[train_end:] = future + np.arange(rows - train_end)
        other, _, other_out = _prepare(Path(folder), times, changed, order, config, "b")
        assert other["scaler"] == manifest["scaler"]
        assert (other_out / "train.parquet").read_bytes() == (out / "train.parquet").read_bytes()
