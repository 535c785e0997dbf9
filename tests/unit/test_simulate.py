"""Tests of the transaction simulator and the window features."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.features import add_time_flags, add_window_features
from training.simulate import FRAUD_AMOUNT_THRESHOLD, FraudScenario, simulate, write_transactions

# Columns and dtypes of the Fraud Detection Handbook's transformed data set
# (Le Borgne et al.), written out here so a change to the code's schema fails.
EXPECTED_DTYPES = {
    "TRANSACTION_ID": "int64",
    "TX_DATETIME": "datetime64[ns]",
    "CUSTOMER_ID": "int64",
    "TERMINAL_ID": "int64",
    "TX_AMOUNT": "float64",
    "TX_TIME_SECONDS": "int64",
    "TX_TIME_DAYS": "int64",
    "TX_FRAUD": "int64",
    "TX_FRAUD_SCENARIO": "int64",
    "TX_DURING_WEEKEND": "int64",
    "TX_DURING_NIGHT": "int64",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW": "float32",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW": "float32",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW": "float32",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW": "float32",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW": "float32",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW": "float32",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW": "float32",
    "TERMINAL_ID_RISK_1DAY_WINDOW": "float32",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW": "float32",
    "TERMINAL_ID_RISK_7DAY_WINDOW": "float32",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW": "float32",
    "TERMINAL_ID_RISK_30DAY_WINDOW": "float32",
}
WINDOW_COLUMNS = [name for name in EXPECTED_DTYPES if name.endswith("WINDOW")]
SMALL = {"n_customers": 300, "n_terminals": 600, "n_days": 40}


def reference_path() -> Path:
    value = os.environ.get("FRAUD_REFERENCE_DATA")
    if not value:
        pytest.skip("FRAUD_REFERENCE_DATA is not set; it names the reference Parquet file")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"FRAUD_REFERENCE_DATA points to a missing file: {path}")
    return path


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    return simulate()


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return simulate(**SMALL, seed=7)


def tiny_frame() -> pd.DataFrame:
    """Eight transactions whose window features are worked out by hand in the tests."""
    rows = [
        # customer, terminal, time, amount, fraud
        (1, 1, "2025-01-01 10:00:00", 10.0, 1),
        (1, 2, "2025-01-01 20:00:00", 30.0, 1),
        (1, 1, "2025-01-02 09:00:00", 50.0, 0),
        (1, 1, "2025-01-05 12:00:00", 20.0, 1),
        (2, 1, "2025-01-09 11:00:00", 100.0, 0),
        (3, 2, "2025-01-08 19:59:59", 7.0, 0),
        (3, 2, "2025-01-08 20:00:00", 5.0, 0),
        (1, 3, "2025-02-03 09:00:00", 40.0, 0),
    ]
    frame = pd.DataFrame(
        rows, columns=["CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME", "TX_AMOUNT", "TX_FRAUD"]
    )
    frame["TX_DATETIME"] = pd.to_datetime(frame["TX_DATETIME"]).astype("datetime64[ns]")
    return frame


def test_simulate_same_seed_identical():
    first = simulate(**SMALL, seed=3)
    second = simulate(**SMALL, seed=3)
    pd.testing.assert_frame_equal(first, second)


def test_simulate_different_seed_differs():
    first = simulate(**SMALL, seed=3)
    second = simulate(**SMALL, seed=4)
    assert not first.equals(second)


def test_simulate_schema_matches_handbook(simulated):
    assert list(simulated.columns) == list(EXPECTED_DTYPES)
    for name, dtype in EXPECTED_DTYPES.items():
        assert str(simulated[name].dtype) == dtype, name


@pytest.mark.reference_data
def test_simulate_schema_matches_reference_file(small):
    reference = pq.read_schema(reference_path())
    produced = pa.Schema.from_pandas(small, preserve_index=False)
    assert produced.names == reference.names
    for field in reference:
        assert produced.field(field.name).type == field.type, field.name


def test_simulate_fraud_rate(simulated):
    rate = simulated["TX_FRAUD"].mean()
    assert 0.005 <= rate <= 0.015


def test_simulate_all_scenarios_present(simulated):
    present = set(simulated["TX_FRAUD_SCENARIO"].unique())
    assert present == {int(scenario) for scenario in FraudScenario}


def test_simulate_label_matches_scenario(simulated):
    expected = (simulated["TX_FRAUD_SCENARIO"] > 0).astype("int64")
    pd.testing.assert_series_equal(simulated["TX_FRAUD"], expected, check_names=False)


def test_simulate_sorted_and_numbered(simulated):
    assert simulated["TX_DATETIME"].is_monotonic_increasing
    np.testing.assert_array_equal(simulated["TRANSACTION_ID"], np.arange(len(simulated)))
    assert isinstance(simulated.index, pd.RangeIndex)


def test_simulate_time_columns_consistent(simulated):
    elapsed = simulated["TX_DATETIME"] - pd.Timestamp("2025-01-01")
    np.testing.assert_array_equal(
        simulated["TX_TIME_SECONDS"], elapsed.dt.total_seconds().astype("int64")
    )
    np.testing.assert_array_equal(simulated["TX_TIME_DAYS"], simulated["TX_TIME_SECONDS"] // 86_400)
    assert simulated["TX_TIME_DAYS"].min() == 0
    assert simulated["TX_TIME_DAYS"].max() == 89


def test_simulate_start_date_shifts_times():
    df = simulate(n_customers=50, n_terminals=100, n_days=3, start_date="2024-02-28")
    assert df["TX_DATETIME"].min() >= pd.Timestamp("2024-02-28")
    assert df["TX_DATETIME"].max() < pd.Timestamp("2024-03-02")


def test_amount_scenario_above_threshold(simulated):
    amounts = simulated.loc[
        simulated["TX_FRAUD_SCENARIO"] == FraudScenario.AMOUNT_ABOVE_THRESHOLD, "TX_AMOUNT"
    ]
    assert (amounts > FRAUD_AMOUNT_THRESHOLD).all()
    genuine = simulated.loc[simulated["TX_FRAUD"] == 0, "TX_AMOUNT"]
    assert (genuine <= FRAUD_AMOUNT_THRESHOLD).all()
    assert (simulated["TX_AMOUNT"] >= 0).all()


def test_compromised_terminal_whole_day(simulated):
    hit = simulated["TX_FRAUD_SCENARIO"] == FraudScenario.COMPROMISED_TERMINAL
    keys = ["TERMINAL_ID", "TX_TIME_DAYS"]
    compromised = simulated.loc[hit, keys].drop_duplicates()
    same_day = simulated.merge(compromised, on=keys)
    # Card fraud and night bursts may relabel some of a compromised terminal's payments.
    assert set(same_day["TX_FRAUD_SCENARIO"]) <= {2, 3, 4}


def test_compromised_card_amounts_inflated(simulated):
    scenario = simulated["TX_FRAUD_SCENARIO"]
    card = simulated.loc[scenario == FraudScenario.COMPROMISED_CARD, "TX_AMOUNT"]
    genuine = simulated.loc[scenario == FraudScenario.GENUINE, "TX_AMOUNT"]
    assert card.median() > 3 * genuine.median()


def test_simulate_night_bursts_at_night(simulated):
    burst = simulated[simulated["TX_FRAUD_SCENARIO"] == FraudScenario.NIGHT_BURST]
    assert (burst["TX_DURING_NIGHT"] == 1).all()
    per_card_day = burst.groupby(["CUSTOMER_ID", "TX_TIME_DAYS"]).size()
    assert per_card_day.min() >= 3


@pytest.mark.parametrize(
    ("argument", "value"),
    [("n_customers", 0), ("n_terminals", -1), ("n_days", 1.5), ("n_days", True)],
)
def test_simulate_rejects_bad_sizes(argument, value):
    with pytest.raises(ValueError, match=argument):
        simulate(**{argument: value})


@pytest.mark.parametrize("start_date", ["2025-13-01", "yesterday", ""])
def test_simulate_rejects_bad_start_date(start_date):
    with pytest.raises(ValueError, match="start_date"):
        simulate(n_customers=5, n_terminals=5, n_days=1, start_date=start_date)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_transactions_round_trip(tmp_path, small, suffix):
    path = write_transactions(small, tmp_path / "nested" / f"tx{suffix}")
    assert path.is_file()
    if suffix == ".parquet":
        back = pd.read_parquet(path)
    else:
        back = pd.read_csv(path, parse_dates=["TX_DATETIME"]).astype(EXPECTED_DTYPES)
    pd.testing.assert_frame_equal(back, small)


def test_write_transactions_rejects_suffix(tmp_path, small):
    with pytest.raises(ValueError, match=r"\.json"):
        write_transactions(small, tmp_path / "tx.json")


def test_customer_features_by_hand():
    out = add_window_features(tiny_frame())
    # Row 2 (Jan 2 09:00): rows 0 to 2 fall in (Jan 1 09:00, Jan 2 09:00].
    assert out.loc[2, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 3
    assert out.loc[2, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx(30.0)
    # Row 3 (Jan 5 12:00): alone over one day, with rows 0 to 2 over seven days.
    assert out.loc[3, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    assert out.loc[3, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx(20.0)
    assert out.loc[3, "CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 4
    assert out.loc[3, "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"] == pytest.approx(27.5)
    # Row 7 (Feb 3 09:00): over 30 days only row 3 (Jan 5) is recent enough to count.
    assert out.loc[7, "CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 1
    assert out.loc[7, "CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 2
    assert out.loc[7, "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"] == pytest.approx(30.0)
    # Customer 2 has a single transaction.
    assert out.loc[4, "CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 1
    assert out.loc[4, "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"] == pytest.approx(100.0)


def test_terminal_features_by_hand():
    out = add_window_features(tiny_frame())
    # Row 4 (terminal 1, Jan 9 11:00) looks at (t - 8 d, t - 7 d] = (Jan 1 11:00, Jan 2 11:00]
    # and (t - 14 d, t - 7 d]: row 3 (Jan 5, fraud) falls in the delay and is not counted.
    assert out.loc[4, "TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert out.loc[4, "TERMINAL_ID_RISK_1DAY_WINDOW"] == 0
    assert out.loc[4, "TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 2
    assert out.loc[4, "TERMINAL_ID_RISK_7DAY_WINDOW"] == pytest.approx(0.5)
    # Row 1 (terminal 2, Jan 1 20:00, fraud) is exactly seven days before row 6.
    assert out.loc[6, "TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert out.loc[6, "TERMINAL_ID_RISK_1DAY_WINDOW"] == 1
    # One second earlier it is still inside the delay.
    assert out.loc[5, "TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0
    assert out.loc[5, "TERMINAL_ID_RISK_30DAY_WINDOW"] == 0
    # A terminal's first week has no history.
    assert out.loc[0, "TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0


def test_window_features_keep_rows_and_dtypes():
    frame = tiny_frame().sample(frac=1.0, random_state=0)
    out = add_window_features(frame)
    pd.testing.assert_index_equal(out.index, frame.index)
    pd.testing.assert_frame_equal(out[frame.columns], frame)
    for name in WINDOW_COLUMNS:
        assert out[name].dtype == np.float32, name
    # Shuffling the rows does not change any feature.
    unshuffled = add_window_features(tiny_frame())
    pd.testing.assert_frame_equal(out.sort_index(), unshuffled)


def test_window_features_custom_windows_and_delay():
    out = add_window_features(tiny_frame(), windows=(2,), delay_days=0)
    assert "CUSTOMER_ID_NB_TX_2DAY_WINDOW" in out.columns
    assert "TERMINAL_ID_RISK_2DAY_WINDOW" in out.columns
    assert "CUSTOMER_ID_NB_TX_1DAY_WINDOW" not in out.columns
    # Without delay the window (t - 2 d, t] of row 2 contains rows 0 and 2 of terminal 1.
    assert out.loc[2, "TERMINAL_ID_NB_TX_2DAY_WINDOW"] == 2
    assert out.loc[2, "TERMINAL_ID_RISK_2DAY_WINDOW"] == pytest.approx(0.5)


def test_terminal_features_ignore_recent_labels(small):
    cutoff = pd.Timestamp("2025-01-25")
    recent = (small["TX_DATETIME"] > cutoff - pd.Timedelta(days=7)) & (
        small["TX_DATETIME"] <= cutoff
    )
    flipped = small.copy()
    flipped.loc[recent, "TX_FRAUD"] = 1 - flipped.loc[recent, "TX_FRAUD"]

    before = add_window_features(small)
    after = add_window_features(flipped)
    terminal = [name for name in WINDOW_COLUMNS if name.startswith("TERMINAL_")]
    up_to_cutoff = small["TX_DATETIME"] <= cutoff
    pd.testing.assert_frame_equal(
        before.loc[up_to_cutoff, terminal], after.loc[up_to_cutoff, terminal]
    )
    # The flipped labels do reach transactions more than seven days later.
    later = small["TX_DATETIME"] > cutoff + pd.Timedelta(days=7)
    changed = (
        before.loc[later, "TERMINAL_ID_RISK_30DAY_WINDOW"]
        != after.loc[later, "TERMINAL_ID_RISK_30DAY_WINDOW"]
    )
    assert changed.any()


def test_simulated_features_recomputed_equal(small):
    raw = small[["TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]]
    recomputed = add_time_flags(add_window_features(raw))
    for name in [*WINDOW_COLUMNS, "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]:
        pd.testing.assert_series_equal(recomputed[name], small[name], check_names=False)


@pytest.mark.parametrize(
    ("timestamp", "weekend", "night"),
    [
        ("2025-01-03 23:59:59", 0, 0),  # Friday
        ("2025-01-04 00:00:00", 1, 1),  # Saturday
        ("2025-01-05 06:59:59", 1, 1),  # Sunday
        ("2025-01-06 07:00:00", 0, 0),  # Monday
        ("2025-01-07 12:30:00", 0, 0),
    ],
)
def test_time_flags(timestamp, weekend, night):
    frame = pd.DataFrame({"TX_DATETIME": pd.to_datetime([timestamp])})
    out = add_time_flags(frame)
    assert out.loc[0, "TX_DURING_WEEKEND"] == weekend
    assert out.loc[0, "TX_DURING_NIGHT"] == night
    assert out["TX_DURING_WEEKEND"].dtype == np.int64


def test_window_features_missing_column():
    with pytest.raises(ValueError, match="TX_FRAUD"):
        add_window_features(tiny_frame().drop(columns="TX_FRAUD"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"windows": ()}, "windows"),
        ({"windows": (0,)}, "window"),
        ({"windows": (7, 7)}, "repeat"),
        ({"delay_days": -1}, "delay_days"),
        ({"delay_days": 1.5}, "delay_days"),
    ],
)
def test_window_features_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_window_features(tiny_frame(), **kwargs)


@pytest.mark.reference_data
@pytest.mark.slow
def test_window_features_match_reference_data():
    reference = pd.read_parquet(reference_path())
    raw = reference[["TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]]
    out = add_time_flags(add_window_features(raw))

    for name in ["TX_DURING_WEEKEND", "TX_DURING_NIGHT"]:
        np.testing.assert_array_equal(out[name], reference[name], err_msg=name)

    # Ties (same customer and second) have no defined order, so they may differ.
    tied = reference.duplicated(["CUSTOMER_ID", "TX_DATETIME"], keep=False).to_numpy()
    for name in WINDOW_COLUMNS:
        close = np.isclose(out[name], reference[name], rtol=1e-5, atol=1e-5)
        if name.startswith("TERMINAL_"):
            assert close.all(), name
        else:
            assert (close | tied).all(), name
