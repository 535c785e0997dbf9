"""Transaction schema, calendar flags and rolling-window features.

The column names, dtypes and feature definitions follow the "simulated-data-transformed"
data set of the Fraud Detection Handbook (Le Borgne et al., 2022), so a model trained on
one frame can score the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_WINDOWS: tuple[int, ...] = (1, 7, 30)
DEFAULT_DELAY_DAYS = 7

# Hours 0 to 6 inclusive count as night, so a night transaction happens before 07:00.
LAST_NIGHT_HOUR = 6
FIRST_WEEKEND_DAY = 5  # Saturday; pandas numbers Monday 0 to Sunday 6.

RAW_COLUMNS: tuple[str, ...] = (
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
)


def customer_feature_columns(windows: Sequence[int] = DEFAULT_WINDOWS) -> list[str]:
    """Return the customer window-feature names in the reference data set's order."""
    columns = []
    for window in windows:
        columns.append(f"CUSTOMER_ID_NB_TX_{window}DAY_WINDOW")
        columns.append(f"CUSTOMER_ID_AVG_AMOUNT_{window}DAY_WINDOW")
    return columns


def terminal_feature_columns(windows: Sequence[int] = DEFAULT_WINDOWS) -> list[str]:
    """Return the terminal window-feature names in the reference data set's order."""
    columns = []
    for window in windows:
        columns.append(f"TERMINAL_ID_NB_TX_{window}DAY_WINDOW")
        columns.append(f"TERMINAL_ID_RISK_{window}DAY_WINDOW")
    return columns


TRANSACTION_DTYPES: dict[str, str] = {
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
    **{name: "float32" for name in customer_feature_columns()},
    **{name: "float32" for name in terminal_feature_columns()},
}
"""Columns of a transaction frame, in order, with their pandas dtypes."""


def add_time_flags(df: pd.DataFrame) -> pd.DataFrame:
    """Add the TX_DURING_WEEKEND and TX_DURING_NIGHT 0/1 flags.

    Parameters
    ----------
    df : pandas.DataFrame
        Transactions with a TX_DATETIME column.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with both flags as int64 columns.
    """
    _check_columns(df, ["TX_DATETIME"])
    timestamps = pd.to_datetime(df["TX_DATETIME"])

    out = df.copy()
    out["TX_DURING_WEEKEND"] = (timestamps.dt.day_of_week >= FIRST_WEEKEND_DAY).astype("int64")
    out["TX_DURING_NIGHT"] = (timestamps.dt.hour <= LAST_NIGHT_HOUR).astype("int64")
    return out


def add_window_features(
    df: pd.DataFrame,
    *,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    delay_days: int = DEFAULT_DELAY_DAYS,
) -> pd.DataFrame:
    """Add the customer and terminal rolling-window features.

    For a transaction at time ``t`` and a window of ``w`` days:

    - ``CUSTOMER_ID_NB_TX_{w}DAY_WINDOW`` counts the customer's transactions in
      ``(t - w, t]``, the current one included, and ``CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW``
      is their mean TX_AMOUNT.
    - ``TERMINAL_ID_NB_TX_{w}DAY_WINDOW`` counts the terminal's transactions in
      ``(t - delay - w, t - delay]`` and ``TERMINAL_ID_RISK_{w}DAY_WINDOW`` is the share of
      them with TX_FRAUD 1, or 0 when there are none. Labels from the last ``delay_days``
      are not used, because in production they are not known yet.

    Transactions with the same customer (or terminal) and the same TX_DATETIME are ranked
    by their row order in ``df``, so a transaction's window excludes the ties after it.

    Parameters
    ----------
    df : pandas.DataFrame
        Transactions with TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT and TX_FRAUD.
        Other columns are kept.
    windows : sequence of int, default (1, 7, 30)
        Window lengths in days.
    delay_days : int, default 7
        Days between a terminal's window and the transaction.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` (same index and row order) with the float32 features appended.
    """
    windows = _check_windows(windows)
    if isinstance(delay_days, bool) or not isinstance(delay_days, (int, np.integer)):
        raise ValueError(f"delay_days must be an integer >= 0, got {delay_days!r}")
    if delay_days < 0:
        raise ValueError(f"delay_days must be an integer >= 0, got {delay_days}")
    _check_columns(df, list(RAW_COLUMNS))

    out = df.copy()
    for name, values in _customer_features(df, windows).items():
        out[name] = values
    for name, values in _terminal_features(df, windows, int(delay_days)).items():
        out[name] = values
    return out


def _check_columns(df: pd.DataFrame, required: list[str]) -> None:
    missing = [name for name in required if name not in df.columns]
    if missing:
        raise ValueError(f"transactions are missing required columns {missing}")


def _check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(windows)
    if not checked:
        raise ValueError("windows must contain at least one window length in days")
    for window in checked:
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"each window must be an integer >= 1 day, got {window!r}")
    if len(set(checked)) != len(checked):
        raise ValueError(f"windows must not repeat, got {checked}")
    return tuple(int(window) for window in checked)


def _rolling_sums(
    df: pd.DataFrame, key: str, values: dict[str, np.ndarray], days: int
) -> dict[str, np.ndarray]:
    """Sum each value array over ``(t - days, t]`` per ``key``, aligned with ``df``'s rows."""
    timestamps = pd.to_datetime(df["TX_DATETIME"]).to_numpy(dtype="datetime64[ns]")
    keys = df[key].to_numpy()

    # Sort by key, then time, then row position, so ties keep their row order.
    order = np.lexsort((np.arange(len(df)), timestamps, keys))
    frame = pd.DataFrame(
        {name: array[order] for name, array in values.items()},
        index=pd.DatetimeIndex(timestamps[order]),
    )
    frame["_key"] = keys[order]

    # Groups come out in the sorted order, so the result lines up with ``order``.
    rolled = frame.groupby("_key", sort=False).rolling(f"{days}D")[list(values)].sum()

    sums = {}
    for name in values:
        aligned = np.empty(len(df), dtype=np.float64)
        aligned[order] = rolled[name].to_numpy(dtype=np.float64)
        sums[name] = aligned
    return sums


def _customer_features(df: pd.DataFrame, windows: tuple[int, ...]) -> dict[str, np.ndarray]:
    values = {
        "count": np.ones(len(df), dtype=np.float64),
        "amount": df["TX_AMOUNT"].to_numpy(dtype=np.float64),
    }
    features = {}
    for window in windows:
        sums = _rolling_sums(df, "CUSTOMER_ID", values, window)
        count = sums["count"]
        mean_amount = np.divide(sums["amount"], count, out=np.zeros_like(count), where=count > 0)
        features[f"CUSTOMER_ID_NB_TX_{window}DAY_WINDOW"] = count.astype(np.float32)
        features[f"CUSTOMER_ID_AVG_AMOUNT_{window}DAY_WINDOW"] = mean_amount.astype(np.float32)
    return features


def _terminal_features(
    df: pd.DataFrame, windows: tuple[int, ...], delay_days: int
) -> dict[str, np.ndarray]:
    values = {
        "count": np.ones(len(df), dtype=np.float64),
        "fraud": df["TX_FRAUD"].to_numpy(dtype=np.float64),
    }

    # Sums over (t - delay, t] are subtracted from sums over (t - delay - w, t], leaving
    # (t - delay - w, t - delay]. With no delay nothing is subtracted.
    if delay_days > 0:
        recent = _rolling_sums(df, "TERMINAL_ID", values, delay_days)
    else:
        recent = {name: np.zeros(len(df)) for name in values}

    features = {}
    for window in windows:
        total = _rolling_sums(df, "TERMINAL_ID", values, delay_days + window)
        count = total["count"] - recent["count"]
        fraud = total["fraud"] - recent["fraud"]
        risk = np.divide(fraud, count, out=np.zeros_like(count), where=count > 0)
        features[f"TERMINAL_ID_NB_TX_{window}DAY_WINDOW"] = count.astype(np.float32)
        features[f"TERMINAL_ID_RISK_{window}DAY_WINDOW"] = risk.astype(np.float32)
    return features
