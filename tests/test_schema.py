"""Ingest: kind inference, timestamps and gaps, and a clear error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_core.config import DataConfig
from model_core.schema import DataError, infer_kind, infer_schema, prepare_table, read_csv
from model_core.simulator import simulate_plant

BATADAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "batadal" / "BATADAL_dataset03.csv"


def test_demo_kinds_and_timestamp():
    schema = infer_schema(simulate_plant(rows=500, seed=0))
    assert schema.timestamp_column == "timestamp"
    assert schema.step_seconds == 3600
    assert set(schema.names("discrete")) == {"S_PUMP1", "S_PUMP2", "S_PUMP3", "S_V1"}
    assert schema.names("constant") == ["PLANT_ID"]
    assert "F_PUMP1" in schema.names("continuous")


def test_infer_kind_rules():
    assert infer_kind(pd.Series([3.0, 3.0, np.nan])) == "constant"
    assert infer_kind(pd.Series([0, 1, 1, 2])) == "discrete"
    assert infer_kind(pd.Series([0.5, 1.0, 1.0])) == "continuous"
    assert infer_kind(pd.Series(range(50))) == "continuous"
    assert infer_kind(pd.Series(range(50)), max_discrete_levels=64) == "discrete"


@pytest.mark.skipif(not BATADAL.exists(), reason="../shared/data is not beside this checkout")
def test_batadal_schema():
    frame = read_csv(BATADAL)
    schema = infer_schema(frame, DataConfig(drop_columns=["ATT_FLAG"]))
    assert schema.timestamp_column == "DATETIME"
    assert schema.start == "2014-01-06 00:00:00"  # day-first dates, chosen because they are regular
    status = [c for c in frame.columns if c.startswith("S_")]
    assert len(status) == 12
    assert all(schema.feature(c).kind in ("discrete", "constant") for c in status)
    assert {"S_PU1", "F_PU3", "F_PU5", "F_PU9"} <= set(schema.names("constant"))
    flows = [c for c in frame.columns if c.startswith("F_") and frame[c].nunique() > 1]
    assert all(schema.feature(c).kind == "continuous" for c in flows)
    assert (frame["F_PU2"] == 0).any()  # zero-inflated, and still continuous
    assert len(schema.features) == 43


def test_overrides_force_kinds_and_drop_columns():
    frame = simulate_plant(rows=300, seed=1)
    config = DataConfig(continuous_columns=["S_PUMP1"], drop_columns=["S_V1"])
    schema = infer_schema(frame, config)
    assert schema.feature("S_PUMP1").kind == "continuous"
    assert "S_V1" not in schema.names()


def test_rows_are_sorted_and_gaps_split_segments():
    frame = simulate_plant(rows=200, seed=2)
    frame = frame.drop(index=range(100, 110)).sample(frac=1.0, random_state=0)  # a 10-hour hole, shuffled
    table = prepare_table(frame, DataConfig(), seq_len=24)
    assert table.timestamps is not None and table.timestamps.is_monotonic_increasing
    assert table.segments == [(0, 100), (100, 190)]


def test_short_segments_are_dropped_and_too_little_data_is_an_error():
    frame = simulate_plant(rows=60, seed=3)
    with pytest.raises(DataError, match="not enough rows for one window"):
        prepare_table(frame, DataConfig(), seq_len=100)


def test_isolated_missing_values_are_filled_long_runs_are_an_error():
    frame = simulate_plant(rows=100, seed=4)
    frame.loc[10:11, "L_T1"] = np.nan
    table = prepare_table(frame, DataConfig(max_fill_gap=3), seq_len=24)
    assert table.values["L_T1"].iloc[10] == table.values["L_T1"].iloc[9]
    frame.loc[10:20, "L_T1"] = np.nan
    with pytest.raises(DataError, match="'L_T1' has 11 missing values in a row starting at row 11"):
        prepare_table(frame, DataConfig(max_fill_gap=3), seq_len=24)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"a,b\n", "header but no rows"),
        (b"a,a\n1,2\n", "duplicate column names: \\['a'\\]"),
    ],
)
def test_read_csv_errors(content, message):
    with pytest.raises(DataError, match=message):
        read_csv(content)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_csv(tmp_path / "nope.csv")


def test_non_numeric_cells_and_columns_are_named():
    frame = simulate_plant(rows=50, seed=5)
    frame["L_T2"] = frame["L_T2"].astype(object)
    frame.loc[7, "L_T2"] = "broken"
    with pytest.raises(DataError, match="'broken' in column 'L_T2' at row 8"):
        infer_schema(frame)
    frame = simulate_plant(rows=50, seed=5)
    frame["site"] = "north"
    with pytest.raises(DataError, match="column 'site' is not numeric"):
        infer_schema(frame)
    frame["mode"] = np.where(np.arange(50) % 3, "ON", "OFF")
    with pytest.raises(DataError, match=r"column 'mode' holds text categories \['OFF', 'ON'\]; .*encode"):
        infer_schema(frame.drop(columns=["site"]))


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_header_without_commas_names_its_separator(separator):
    frame = simulate_plant(rows=50, seed=8)
    content = frame.to_csv(index=False, sep=separator).encode()
    read = read_csv(content)
    assert list(read.columns) == list(frame.columns)
    assert np.allclose(read["L_T1"], frame["L_T1"])
    # A comma in the header decides for the comma, even with semicolons in the values.
    assert list(read_csv(b"a,b\n1,x;y\n").columns) == ["a", "b"]


def test_a_few_repeated_timestamps_are_kept_many_are_an_error():
    frame = simulate_plant(rows=200, seed=9)
    repeated_hour = pd.concat([frame, frame.iloc[[50]]])  # a clock set back once: one repeated stamp
    schema = infer_schema(repeated_hour)
    assert schema.step_seconds == infer_schema(frame).step_seconds > 0
    table = prepare_table(repeated_hour, DataConfig(), seq_len=24)
    assert len(table.values) == 201 and table.segments == [(0, 201)]
    interleaved = pd.concat([frame, frame])  # two devices' logs in one file
    with pytest.raises(DataError, match="200 of 400 rows repeat another row's timestamp in column 'timestamp'"):
        infer_schema(interleaved)


def test_all_missing_column_is_an_error():
    frame = simulate_plant(rows=50, seed=6)
    frame["empty"] = np.nan
    with pytest.raises(DataError, match="'empty' has no values"):
        infer_schema(frame)


def test_config_names_unknown_columns():
    frame = simulate_plant(rows=50, seed=7)
    with pytest.raises(DataError, match="'nope'"):
        infer_schema(frame, DataConfig(discrete_columns=["nope"]))
    with pytest.raises(DataError, match="nope"):
        infer_schema(frame, DataConfig(drop_columns=["nope"]))
    with pytest.raises(DataError, match="timestamp column 'nope'"):
        infer_schema(frame, DataConfig(timestamp_column="nope"))
