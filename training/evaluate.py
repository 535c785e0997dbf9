"""Evaluation metrics for fraud scores, including the card-based test protocol.

The protocol follows *Reproducible Machine Learning for Credit Card Fraud Detection -
Practical Handbook* (Le Borgne et al., 2022). Its test period drops the transactions of
cards already known to be compromised. Its card precision@k counts the frauds among the
k most suspicious cards of each day.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

logger = logging.getLogger(__name__)

CUSTOMER_COL = "CUSTOMER_ID"
DAY_COL = "TX_TIME_DAYS"
DATETIME_COL = "TX_DATETIME"
LABEL_COL = "TX_FRAUD"


def transaction_days(
    frame: pd.DataFrame, *, day_col: str | None = DAY_COL, datetime_col: str = DATETIME_COL
) -> np.ndarray:
    """Return the integer day index of each transaction.

    Parameters
    ----------
    frame : pandas.DataFrame
        Transactions with ``day_col`` or ``datetime_col``.
    day_col : str or None
        Column of integer day numbers, used when given and present.
    datetime_col : str
        Timestamp column used otherwise. The day index is then the number of calendar
        days since 1970-01-01, by the timestamps' wall-clock date.

    Returns
    -------
    numpy.ndarray of shape (n_transactions,), dtype int64
    """
    if day_col is not None and day_col in frame.columns:
        return frame[day_col].to_numpy(dtype=np.int64)

    if datetime_col not in frame.columns:
        expected = f"day column {day_col!r} or " if day_col is not None else ""
        raise ValueError(f"frame has no {expected}datetime column {datetime_col!r}")

    timestamps = pd.to_datetime(frame[datetime_col])
    if timestamps.dt.tz is not None:
        timestamps = timestamps.dt.tz_localize(None)
    return timestamps.to_numpy().astype("datetime64[D]").astype(np.int64)


def _shared_day_columns(
    frames: dict[str, pd.DataFrame], day_col: str, datetime_col: str
) -> list[np.ndarray]:
    # Day numbers and calendar days count from different origins, so all frames use one rule.
    if all(day_col in frame.columns for frame in frames.values()):
        return [transaction_days(frame, day_col=day_col) for frame in frames.values()]

    for name, frame in frames.items():
        if datetime_col not in frame.columns:
            raise ValueError(
                f"{name} has no datetime column {datetime_col!r}, which every frame needs "
                f"when any of them lacks day column {day_col!r}"
            )
    return [
        transaction_days(frame, day_col=None, datetime_col=datetime_col)
        for frame in frames.values()
    ]


def _require_columns(frames: dict[str, pd.DataFrame | None], columns: set[str]) -> None:
    for name, frame in frames.items():
        missing = set() if frame is None else columns - set(frame.columns)
        if missing:
            raise ValueError(f"{name} is missing column(s) {sorted(missing)}")


def remove_known_compromised(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    delay_period: pd.DataFrame | None = None,
    delay_days: int = 7,
    customer_col: str = CUSTOMER_COL,
    day_col: str = DAY_COL,
    label_col: str = LABEL_COL,
    datetime_col: str = DATETIME_COL,
) -> pd.DataFrame:
    """Drop the test transactions of customers already known to be compromised.

    On test day ``t`` a customer is known if it had a fraud anywhere in ``train``, or a
    fraud in ``delay_period`` or ``test`` on a day up to ``t - delay_days - 1``. Labels of
    the last ``delay_days`` days before ``t`` have not arrived yet.

    Parameters
    ----------
    train : pandas.DataFrame
        Labelled transactions of the training period.
    test : pandas.DataFrame
        Transactions of the test period.
    delay_period : pandas.DataFrame, optional
        Labelled transactions between the end of ``train`` and the start of ``test``.
        The handbook protocol needs them: a fraud on 2018-08-01 makes its card known
        from 2018-08-09 on.
    delay_days : int
        Days a fraud label takes to become known.
    customer_col, day_col, label_col, datetime_col : str
        Column names. When ``day_col`` is missing from any frame, days come from
        ``datetime_col`` in every frame.

    Returns
    -------
    pandas.DataFrame
        The rows of ``test`` whose customer is not yet known, with the original index.
    """
    if delay_days < 0:
        raise ValueError(f"delay_days must be >= 0, got {delay_days}")

    _require_columns(
        {"train": train, "delay_period": delay_period, "test": test}, {customer_col, label_col}
    )
    later = {"test": test} if delay_period is None else {"delay_period": delay_period, "test": test}

    train_days, *later_days = _shared_day_columns({"train": train, **later}, day_col, datetime_col)
    test_days = later_days[-1]
    _warn_on_unlabelled_gap(train_days, test_days, delay_period is None)

    train_frauds = train.loc[train[label_col].to_numpy() == 1, customer_col].unique()

    # A customer's earliest fraud after training decides from which test day it is known.
    fraud_days = []
    for frame, days in zip(later.values(), later_days, strict=True):
        is_fraud = frame[label_col].to_numpy() == 1
        customers = frame[customer_col].to_numpy()[is_fraud]
        fraud_days.append(pd.Series(days[is_fraud], index=customers))
    first_fraud_day = pd.concat(fraud_days).groupby(level=0).min()

    test_customers = test[customer_col]
    known_from_day = test_customers.map(first_fraud_day).to_numpy(dtype=np.float64)
    known = test_customers.isin(train_frauds).to_numpy() | (
        known_from_day <= test_days - delay_days - 1
    )

    logger.info(
        "removed %d of %d test transactions of %d known compromised customers",
        int(known.sum()),
        len(test),
        test_customers[known].nunique(),
    )
    return test.loc[~known]


def _warn_on_unlabelled_gap(
    train_days: np.ndarray, test_days: np.ndarray, no_delay_period: bool
) -> None:
    if not no_delay_period or len(train_days) == 0 or len(test_days) == 0:
        return
    gap = int(test_days.min()) - int(train_days.max()) - 1
    if gap > 0:
        logger.warning(
            "test starts %d day(s) after train ends but no delay_period was given, "
            "so frauds of those days do not count as known",
            gap,
        )


def card_precision_at_k(
    frame: pd.DataFrame,
    scores: np.ndarray | Sequence[float],
    *,
    k: int = 100,
    customer_col: str = CUSTOMER_COL,
    day_col: str = DAY_COL,
    label_col: str = LABEL_COL,
    datetime_col: str = DATETIME_COL,
) -> float:
    """Compute the mean daily card precision@k.

    Each day, every customer gets its maximum score and maximum fraud label of that day.
    The share of frauds among the ``k`` highest-scored customers is that day's value,
    always divided by ``k`` even when fewer customers transacted. Customers found to be
    fraudulent in a day's top ``k`` are left out of all later days. Equal scores rank the
    lower customer id first.

    Parameters
    ----------
    frame : pandas.DataFrame
        Test transactions with customer, label and day (or datetime) columns.
    scores : array-like of shape (n_transactions,)
        Fraud scores aligned by position with ``frame``.
    k : int
        Number of cards checked per day.

    Returns
    -------
    float
        Mean of the daily values over the days present in ``frame``.
    """
    if label_col not in frame.columns:
        raise ValueError(f"frame is missing label column {label_col!r}")
    return _card_precision_at_k(
        _card_columns(frame, customer_col, day_col, datetime_col),
        _as_labels(frame[label_col], f"frame[{label_col!r}]"),
        _as_scores(scores, len(frame)),
        k,
    )


def _card_columns(
    frame: pd.DataFrame, customer_col: str, day_col: str, datetime_col: str
) -> tuple[np.ndarray, np.ndarray]:
    if customer_col not in frame.columns:
        raise ValueError(f"frame is missing customer column {customer_col!r}")
    customers = frame[customer_col].to_numpy()
    days = transaction_days(frame, day_col=day_col, datetime_col=datetime_col)
    return customers, days


def _card_precision_at_k(
    cards: tuple[np.ndarray, np.ndarray], labels: np.ndarray, scores: np.ndarray, k: int
) -> float:
    customers, days = cards
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(scores) == 0:
        raise ValueError("card precision@k needs at least one transaction, got none")

    per_card_day = (
        pd.DataFrame({"day": days, "customer": customers, "label": labels, "score": scores})
        .groupby(["day", "customer"], sort=True)
        .max()
        .reset_index()
    )

    detected: set = set()
    daily_precision = []
    for _, cards_of_day in per_card_day.groupby("day", sort=True):
        cards_of_day = cards_of_day[~cards_of_day["customer"].isin(detected)]

        # lexsort sorts by its last key first: score descending, then customer ascending.
        order = np.lexsort((cards_of_day["customer"].to_numpy(), -cards_of_day["score"].to_numpy()))
        top = cards_of_day.iloc[order[:k]]
        found = top.loc[top["label"] == 1, "customer"]

        daily_precision.append(len(found) / k)
        detected.update(found.tolist())

    return float(np.mean(daily_precision))


def _as_scores(scores: np.ndarray | Sequence[float], n: int, name: str = "scores") -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).ravel()
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values, expected {n}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains {int((~np.isfinite(values)).sum())} NaN or inf values")
    return values


def _as_labels(y_true: np.ndarray | Sequence[int] | pd.Series, name: str) -> np.ndarray:
    values = np.asarray(y_true).ravel()
    invalid = ~np.isin(values, (0, 1))
    if invalid.any():
        raise ValueError(f"{name} must contain only 0 and 1, got {values[invalid][0].item()!r}")
    return values.astype(np.int64)


def evaluate_scores(
    y_true: np.ndarray | Sequence[int] | pd.Series,
    scores: np.ndarray | Sequence[float],
    *,
    threshold: float,
    frame: pd.DataFrame | None = None,
    escalated: np.ndarray | Sequence[bool] | None = None,
) -> dict[str, float | int | None]:
    """Compute ranking and threshold metrics of fraud scores.

    Parameters
    ----------
    y_true : array-like of shape (n_transactions,)
        Fraud labels, 0 or 1.
    scores : array-like of shape (n_transactions,)
        Fraud scores. A score ``>= threshold`` raises an alert.
    threshold : float
        Alert threshold on ``scores``.
    frame : pandas.DataFrame, optional
        Transactions aligned by position with ``y_true``, with ``CUSTOMER_ID`` and
        ``TX_TIME_DAYS`` or ``TX_DATETIME``. Card precision@100 needs it and uses
        ``y_true`` as the label.
    escalated : array-like of bool of shape (n_transactions,), optional
        Whether stage 1 sent each transaction to stage 2.

    Returns
    -------
    dict
        ``auc_roc``, ``average_precision``, ``card_precision_at_100``,
        ``recall_at_threshold``, ``precision_at_threshold``, ``f1_at_threshold``,
        ``alert_rate``, ``escalation_rate``, ``n_transactions``, ``n_frauds``. A metric
        is None when it is undefined: AUC ROC with a single class, average precision
        and recall without frauds, precision without alerts, card precision without
        ``frame``, escalation rate without ``escalated``.
    """
    labels = _as_labels(y_true, "y_true")
    values = _as_scores(scores, len(labels))
    if len(labels) == 0:
        raise ValueError("y_true is empty")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")

    n_frauds = int(labels.sum())
    both_classes = 0 < n_frauds < len(labels)

    alerts = values >= threshold
    true_alerts = int(np.sum(alerts & (labels == 1)))
    n_alerts = int(alerts.sum())
    # F1 = 2 TP / (2 TP + FP + FN), defined unless there are neither frauds nor alerts.
    f1_denominator = n_alerts + n_frauds

    return {
        "auc_roc": float(roc_auc_score(labels, values)) if both_classes else None,
        "average_precision": (float(average_precision_score(labels, values)) if n_frauds else None),
        "card_precision_at_100": _card_precision_or_none(frame, labels, values),
        "recall_at_threshold": true_alerts / n_frauds if n_frauds else None,
        "precision_at_threshold": true_alerts / n_alerts if n_alerts else None,
        "f1_at_threshold": 2 * true_alerts / f1_denominator if f1_denominator else None,
        "alert_rate": n_alerts / len(labels),
        "escalation_rate": _escalation_rate(escalated, len(labels)),
        "n_transactions": len(labels),
        "n_frauds": n_frauds,
    }


def _card_precision_or_none(
    frame: pd.DataFrame | None, labels: np.ndarray, scores: np.ndarray
) -> float | None:
    if frame is None:
        return None
    if len(frame) != len(labels):
        raise ValueError(f"frame has {len(frame)} rows, expected {len(labels)} like y_true")
    cards = _card_columns(frame, CUSTOMER_COL, DAY_COL, DATETIME_COL)
    return _card_precision_at_k(cards, labels, scores, k=100)


def _escalation_rate(escalated: np.ndarray | Sequence[bool] | None, n: int) -> float | None:
    if escalated is None:
        return None
    flags = np.asarray(escalated).ravel()
    if len(flags) != n:
        raise ValueError(f"escalated has {len(flags)} values, expected {n}")
    if flags.dtype != np.bool_ and not np.isin(flags, (0, 1)).all():
        raise ValueError("escalated must contain only booleans or 0 and 1")
    return float(flags.astype(bool).mean())
