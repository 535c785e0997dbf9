"""Deterministic simulator of card transactions with labelled fraud.

Customers live at random points of a square and pay at the terminals within a fixed
radius of home. Each customer has a mean and standard deviation of the amount and a
mean number of transactions per day. Four fraud scenarios are added on top of the
genuine transactions (see `FraudScenario`). The output has the columns and dtypes of
`training.features.TRANSACTION_DTYPES`, the layout of the Fraud Detection Handbook's
transformed data set (Le Borgne et al., 2022). That data set has scenarios 1 to 3 only, so
scenario 4 (night bursts) is new to a model trained on it.
"""

from __future__ import annotations

import datetime
import enum
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.features import TRANSACTION_DTYPES, add_time_flags, add_window_features

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
AREA_SIZE = 100.0
TERMINAL_RADIUS = 5.0

# Genuine spending profiles.
MEAN_AMOUNT_RANGE = (5.0, 100.0)
STD_TO_MEAN_RANGE = (0.3, 0.6)
TX_PER_DAY_RANGE = (0.0, 4.0)
# Time of day in seconds after midnight, normally distributed.
TIME_OF_DAY_MEAN = 12 * 3600.0
TIME_OF_DAY_STD = 5.5 * 3600.0

# Scenario 1: any amount above this is fraud.
FRAUD_AMOUNT_THRESHOLD = 220.0

# Scenario 2: new compromised terminals per day, as a share of all terminals.
COMPROMISED_TERMINALS_PER_DAY = 0.0002
COMPROMISED_TERMINAL_DAYS = 28

# Scenario 3: new compromised cards per day, as a share of all customers.
COMPROMISED_CARDS_PER_DAY = 0.0006
COMPROMISED_CARD_DAYS = 14
COMPROMISED_CARD_FRAUD_SHARE = 1 / 3
COMPROMISED_CARD_AMOUNT_FACTOR = 5.0

# Scenario 4: night-time card-testing bursts per day, as a share of all customers.
NIGHT_BURSTS_PER_DAY = 0.0004
NIGHT_BURST_SIZE_RANGE = (3, 8)
NIGHT_BURST_LATEST_START = 5 * 3600
NIGHT_BURST_MEAN_GAP_SECONDS = 120.0
NIGHT_BURST_AMOUNT_RANGE = (1.0, 20.0)


class FraudScenario(enum.IntEnum):
    """Value of TX_FRAUD_SCENARIO. Every scenario other than GENUINE sets TX_FRAUD to 1."""

    GENUINE = 0
    AMOUNT_ABOVE_THRESHOLD = 1
    """Any transaction above `FRAUD_AMOUNT_THRESHOLD`."""
    COMPROMISED_TERMINAL = 2
    """Every transaction at a terminal during the days after it was compromised."""
    COMPROMISED_CARD = 3
    """A share of a compromised card's later transactions, with inflated amounts."""
    NIGHT_BURST = 4
    """Extra small transactions at random terminals, in a burst that starts before 05:00."""


@dataclass(frozen=True)
class _Transactions:
    """Column arrays of unsorted transactions, which the labelling steps change in place."""

    customer: np.ndarray
    terminal: np.ndarray
    seconds: np.ndarray
    amount: np.ndarray
    scenario: np.ndarray


def simulate(
    *,
    n_customers: int = 2000,
    n_terminals: int = 4000,
    n_days: int = 90,
    start_date: str = "2025-01-01",
    seed: int = 42,
) -> pd.DataFrame:
    """Simulate labelled card transactions.

    Parameters
    ----------
    n_customers : int, default 2000
        Number of customers (card holders).
    n_terminals : int, default 4000
        Number of payment terminals.
    n_days : int, default 90
        Number of simulated days.
    start_date : str, default "2025-01-01"
        First day as an ISO date; TX_TIME_SECONDS and TX_TIME_DAYS count from its midnight.
    seed : int, default 42
        Seed of the random generator. The same arguments give an identical frame.

    Returns
    -------
    pandas.DataFrame
        One row per transaction, sorted by TX_DATETIME, with TRANSACTION_ID 0 to n-1 in
        that order and the columns and dtypes of ``TRANSACTION_DTYPES``.
    """
    _check_positive("n_customers", n_customers)
    _check_positive("n_terminals", n_terminals)
    _check_positive("n_days", n_days)
    start = _parse_start_date(start_date)
    rng = np.random.default_rng(seed)

    profiles = _customer_profiles(rng, n_customers)
    terminal_xy = rng.uniform(0.0, AREA_SIZE, size=(n_terminals, 2))
    offsets, reachable = _terminals_in_radius(profiles["xy"], terminal_xy, TERMINAL_RADIUS)

    genuine = _genuine_transactions(rng, profiles, offsets, reachable, n_days)
    _label_large_amounts(genuine)
    _label_compromised_terminals(rng, genuine, n_terminals, n_days)
    _label_compromised_cards(rng, genuine, n_customers, n_days)
    bursts = _night_bursts(rng, n_customers, n_terminals, n_days)

    df = _assemble([genuine, bursts], start)
    logger.info(
        "Simulated %d transactions over %d days (seed %d), fraud rate %.2f %%",
        len(df),
        n_days,
        seed,
        100 * df["TX_FRAUD"].mean() if len(df) else 0.0,
    )
    return df


def write_transactions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write transactions to a Parquet or CSV file, chosen by the file suffix.

    Parameters
    ----------
    df : pandas.DataFrame
        Transactions to write; the index is not written.
    path : str or Path
        Output file ending in ``.parquet`` or ``.csv``. Missing parent folders are created.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output path must end in .parquet or .csv, got {str(path)!r}")

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.to_parquet(path, index=False, compression="zstd")
    else:
        df.to_csv(path, index=False)
    logger.info("Wrote %d transactions to %s", len(df), path)
    return path


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _parse_start_date(start_date: str) -> np.datetime64:
    try:
        day = datetime.date.fromisoformat(start_date)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"start_date must be an ISO date such as 2025-01-01, got {start_date!r}"
        ) from exc
    return np.datetime64(day.isoformat(), "ns")


def _customer_profiles(rng: np.random.Generator, n_customers: int) -> dict[str, np.ndarray]:
    xy = rng.uniform(0.0, AREA_SIZE, size=(n_customers, 2))
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, size=n_customers)
    std_amount = mean_amount * rng.uniform(*STD_TO_MEAN_RANGE, size=n_customers)
    tx_per_day = rng.uniform(*TX_PER_DAY_RANGE, size=n_customers)
    return {
        "xy": xy,
        "mean_amount": mean_amount,
        "std_amount": std_amount,
        "tx_per_day": tx_per_day,
    }


def _terminals_in_radius(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Find each customer's terminals within ``radius``, in compressed sparse row form.

    Customer ``c``'s terminals are ``reachable[offsets[c]:offsets[c + 1]]``.
    """
    # Blocks of customers keep each distance matrix near 2 M entries.
    block = max(1, 2_000_000 // len(terminal_xy))
    rows, cols = [], []
    for first in range(0, len(customer_xy), block):
        chunk = customer_xy[first : first + block]
        squared = ((chunk[:, None, :] - terminal_xy[None, :, :]) ** 2).sum(axis=2)
        chunk_rows, chunk_cols = np.nonzero(squared < radius**2)
        rows.append(chunk_rows + first)
        cols.append(chunk_cols)

    row_index = np.concatenate(rows)
    counts = np.bincount(row_index, minlength=len(customer_xy))
    offsets = np.concatenate(([0], np.cumsum(counts)))
    return offsets, np.concatenate(cols)


def _genuine_transactions(
    rng: np.random.Generator,
    profiles: dict[str, np.ndarray],
    offsets: np.ndarray,
    reachable: np.ndarray,
    n_days: int,
) -> _Transactions:
    n_customers = len(profiles["tx_per_day"])
    per_day = rng.poisson(profiles["tx_per_day"][:, None], size=(n_customers, n_days))
    customer = np.repeat(np.arange(n_customers), per_day.sum(axis=1))
    day = np.repeat(np.tile(np.arange(n_days), n_customers), per_day.ravel())

    mean = profiles["mean_amount"][customer]
    amount = rng.normal(mean, profiles["std_amount"][customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2 * mean[negative])
    time_of_day = np.rint(rng.normal(TIME_OF_DAY_MEAN, TIME_OF_DAY_STD, size=len(day)))
    terminal_draw = rng.random(len(day))

    # Times of day outside [0, 24 h) are dropped, as are customers with no terminal nearby.
    terminal_count = np.diff(offsets)[customer]
    keep = (time_of_day >= 0) & (time_of_day < SECONDS_PER_DAY) & (terminal_count > 0)
    customer, day, amount = customer[keep], day[keep], amount[keep]
    time_of_day, terminal_draw = time_of_day[keep], terminal_draw[keep]

    pick = np.floor(terminal_draw * terminal_count[keep]).astype(np.int64)
    terminal = reachable[offsets[customer] + pick]

    return _Transactions(
        customer=customer,
        terminal=terminal,
        seconds=day * SECONDS_PER_DAY + time_of_day.astype(np.int64),
        amount=np.round(amount, 2),
        scenario=np.zeros(len(customer), dtype=np.int64),
    )


def _compromised_days(
    rng: np.random.Generator, n_entities: int, n_days: int, rate: float, duration: int
) -> np.ndarray:
    """Mark ``(entity, day)`` pairs that fall in a compromise period.

    Each day a Poisson number of entities, of mean ``rate * n_entities``, is compromised
    from the next day on for ``duration`` days.
    """
    compromised = np.zeros((n_entities, n_days + 1), dtype=bool)
    new_per_day = rng.poisson(rate * n_entities, size=n_days)
    for day, count in enumerate(new_per_day):
        entities = rng.choice(n_entities, size=min(count, n_entities), replace=False)
        compromised[entities, day + 1 : day + 1 + duration] = True
    return compromised[:, :n_days]


def _label_large_amounts(tx: _Transactions) -> None:
    tx.scenario[tx.amount > FRAUD_AMOUNT_THRESHOLD] = FraudScenario.AMOUNT_ABOVE_THRESHOLD


def _label_compromised_terminals(
    rng: np.random.Generator, tx: _Transactions, n_terminals: int, n_days: int
) -> None:
    compromised = _compromised_days(
        rng, n_terminals, n_days, COMPROMISED_TERMINALS_PER_DAY, COMPROMISED_TERMINAL_DAYS
    )
    hit = compromised[tx.terminal, tx.seconds // SECONDS_PER_DAY]
    tx.scenario[hit] = FraudScenario.COMPROMISED_TERMINAL


def _label_compromised_cards(
    rng: np.random.Generator, tx: _Transactions, n_customers: int, n_days: int
) -> None:
    compromised = _compromised_days(
        rng, n_customers, n_days, COMPROMISED_CARDS_PER_DAY, COMPROMISED_CARD_DAYS
    )
    in_period = compromised[tx.customer, tx.seconds // SECONDS_PER_DAY]
    hit = in_period & (rng.random(len(tx.amount)) < COMPROMISED_CARD_FRAUD_SHARE)
    tx.amount[hit] = np.round(tx.amount[hit] * COMPROMISED_CARD_AMOUNT_FACTOR, 2)
    tx.scenario[hit] = FraudScenario.COMPROMISED_CARD


def _night_bursts(
    rng: np.random.Generator, n_customers: int, n_terminals: int, n_days: int
) -> _Transactions:
    """Generate card-testing bursts: several small payments minutes apart at night."""
    bursts_per_day = rng.poisson(NIGHT_BURSTS_PER_DAY * n_customers, size=n_days)
    burst_day = np.repeat(np.arange(n_days), bursts_per_day)
    n_bursts = len(burst_day)
    burst_customer = rng.integers(0, n_customers, size=n_bursts)
    burst_start = rng.integers(0, NIGHT_BURST_LATEST_START, size=n_bursts)
    low, high = NIGHT_BURST_SIZE_RANGE
    burst_size = rng.integers(low, high + 1, size=n_bursts)

    burst = np.repeat(np.arange(n_bursts), burst_size)
    gaps = np.ceil(rng.exponential(NIGHT_BURST_MEAN_GAP_SECONDS, size=len(burst)))
    # Offsets from the burst start: the running sum of gaps, restarted for each burst.
    running = np.cumsum(gaps)
    first_in_burst = np.cumsum(burst_size) - burst_size
    restart = np.repeat(running[first_in_burst] - gaps[first_in_burst], burst_size)
    offset = (running - restart).astype(np.int64)

    n_tx = len(burst)
    return _Transactions(
        customer=burst_customer[burst],
        terminal=rng.integers(0, n_terminals, size=n_tx),
        seconds=burst_day[burst] * SECONDS_PER_DAY + burst_start[burst] + offset,
        amount=np.round(rng.uniform(*NIGHT_BURST_AMOUNT_RANGE, size=n_tx), 2),
        scenario=np.full(n_tx, FraudScenario.NIGHT_BURST, dtype=np.int64),
    )


def _assemble(parts: list[_Transactions], start: np.datetime64) -> pd.DataFrame:
    """Sort transactions by time, number them and add flags and window features."""
    seconds = np.concatenate([part.seconds for part in parts])
    customer = np.concatenate([part.customer for part in parts])
    terminal = np.concatenate([part.terminal for part in parts])
    order = np.lexsort((terminal, customer, seconds))

    seconds = seconds[order]
    scenario = np.concatenate([part.scenario for part in parts])[order]
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(order), dtype=np.int64),
            "TX_DATETIME": start + seconds.astype("timedelta64[s]").astype("timedelta64[ns]"),
            "CUSTOMER_ID": customer[order].astype(np.int64),
            "TERMINAL_ID": terminal[order].astype(np.int64),
            "TX_AMOUNT": np.concatenate([part.amount for part in parts])[order],
            "TX_TIME_SECONDS": seconds.astype(np.int64),
            "TX_TIME_DAYS": (seconds // SECONDS_PER_DAY).astype(np.int64),
            "TX_FRAUD": (scenario > 0).astype(np.int64),
            "TX_FRAUD_SCENARIO": scenario.astype(np.int64),
        }
    )

    df = add_time_flags(df)
    df = add_window_features(df)
    return df[list(TRANSACTION_DTYPES)].astype(TRANSACTION_DTYPES)
