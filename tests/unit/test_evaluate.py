"""Tests of the evaluation metrics and the known-compromised-card protocol."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from training.evaluate import (
    card_precision_at_k,
    evaluate_scores,
    remove_known_compromised,
    transaction_days,
)


def with_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace TX_TIME_DAYS by timestamps in the afternoon of that day."""
    timestamps = pd.Timestamp("2018-04-01 15:30") + pd.to_timedelta(frame["TX_TIME_DAYS"], "D")
    return frame.drop(columns="TX_TIME_DAYS").assign(TX_DATETIME=timestamps)


@pytest.fixture
def three_days() -> tuple[pd.DataFrame, np.ndarray]:
    """Three days of transactions of customers 1-5 with scores.

    Day 0 top 2: customer 4 (0.95, genuine) and customer 1 (0.9 on a genuine transaction,
    but it also has a fraud that day), so 1 fraud and customer 1 is detected.
    Day 1: customer 1 is dropped; top 2 are customers 2 and 3, both frauds, so both are
    detected. Day 2: customers 1 and 2 are dropped. Customer 4 stays although it was in
    the top 2 on day 0, because it was genuine then. Top 2: customer 4 (fraud) and 5.
    """
    rows = [
        # day, customer, label, score
        (0, 1, 0, 0.9),
        (0, 1, 1, 0.1),
        (0, 2, 0, 0.8),
        (0, 3, 1, 0.7),
        (0, 4, 0, 0.95),
        (1, 1, 0, 0.99),
        (1, 2, 1, 0.6),
        (1, 3, 1, 0.5),
        (1, 4, 0, 0.1),
        (2, 4, 1, 0.9),
        (2, 2, 1, 0.8),
        (2, 5, 0, 0.3),
        (2, 1, 0, 0.2),
    ]
    frame = pd.DataFrame(
        [row[:3] for row in rows], columns=["TX_TIME_DAYS", "CUSTOMER_ID", "TX_FRAUD"]
    )
    scores = np.array([row[3] for row in rows])
    return frame, scores


def test_card_precision_drops_detected_cards(three_days):
    frame, scores = three_days

    result = card_precision_at_k(frame, scores, k=2)

    assert result == pytest.approx((1 / 2 + 2 / 2 + 1 / 2) / 3)


def test_card_precision_k_above_card_count(three_days):
    frame, scores = three_days

    result = card_precision_at_k(frame, scores, k=10)

    # Day 0: frauds 1 and 3 of 4 cards. Day 1: only 2 and 4 remain, 2 is a fraud.
    # Day 2: 4 and 5 remain, 4 is a fraud. Each day divides by k, not by the card count.
    assert result == pytest.approx((2 / 10 + 1 / 10 + 1 / 10) / 3)


def test_card_precision_from_datetimes(three_days):
    frame, scores = three_days

    result = card_precision_at_k(with_datetimes(frame), scores, k=2)

    assert result == pytest.approx(card_precision_at_k(frame, scores, k=2))


def test_card_precision_ties_rank_lower_customer_first():
    frame = pd.DataFrame({"TX_TIME_DAYS": [0, 0], "CUSTOMER_ID": [7, 3], "TX_FRAUD": [0, 1]})

    result = card_precision_at_k(frame, np.array([0.5, 0.5]), k=1)

    assert result == 1.0


def test_card_precision_rejects_bad_input(three_days):
    frame, scores = three_days

    with pytest.raises(ValueError, match="k must be >= 1"):
        card_precision_at_k(frame, scores, k=0)
    with pytest.raises(ValueError, match="scores has 12 values, expected 13"):
        card_precision_at_k(frame, scores[:-1], k=2)
    with pytest.raises(ValueError, match="CUSTOMER_ID"):
        card_precision_at_k(frame.drop(columns="CUSTOMER_ID"), scores)


@pytest.fixture
def periods() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training days 0-6, delay days 7-13 and test days 14-22 of customers 1-6."""
    train = pd.DataFrame(
        {"TX_TIME_DAYS": [3, 5, 6], "CUSTOMER_ID": [1, 5, 2], "TX_FRAUD": [1, 0, 0]}
    )
    delay = pd.DataFrame(
        {"TX_TIME_DAYS": [7, 12, 13, 9], "CUSTOMER_ID": [2, 3, 6, 5], "TX_FRAUD": [1, 1, 1, 0]}
    )
    test = pd.DataFrame(
        {
            "TX_TIME_DAYS": [14, 20, 14, 15, 19, 20, 14, 20, 22, 14, 20],
            "CUSTOMER_ID": [1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 6],
            "TX_FRAUD": [0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1],
        },
        index=[100 + i for i in range(11)],
    )
    return train, delay, test


# Customer 1: training fraud, known on every test day.
# Customer 2: fraud on day 7, known from day 15. Customer 3: fraud on day 12, known from 20.
# Customer 4: fraud on test day 14, known from day 22. Customer 5: never a fraud.
# Customer 6: fraud on day 13, known from day 21, after its only test row.
KEPT_WITH_DELAY = [102, 104, 106, 107, 109, 110]


def test_known_compromised_removal(periods):
    train, delay, test = periods

    kept = remove_known_compromised(train, test, delay_period=delay)

    assert kept.index.tolist() == KEPT_WITH_DELAY
    assert kept.columns.tolist() == test.columns.tolist()


def test_known_compromised_from_datetimes(periods):
    train, delay, test = periods

    kept = remove_known_compromised(
        with_datetimes(train), with_datetimes(test), delay_period=with_datetimes(delay)
    )

    assert kept.index.tolist() == KEPT_WITH_DELAY


def test_known_compromised_mixed_day_sources(periods):
    train, delay, test = periods

    # Test lacks TX_TIME_DAYS, so every frame must give TX_DATETIME, and train does not.
    with pytest.raises(ValueError, match="train has no datetime column 'TX_DATETIME'"):
        remove_known_compromised(train, with_datetimes(test), delay_period=delay)


def test_known_compromised_without_delay_period(periods, caplog):
    train, _, test = periods

    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        kept = remove_known_compromised(train, test)

    # Without the delay period only customer 1 (training fraud) and customer 4 (a test
    # fraud more than 7 days old on day 22) are known.
    assert kept.index.tolist() == [102, 103, 104, 105, 106, 107, 109, 110]
    assert "no delay_period was given" in caplog.text


def test_known_compromised_shorter_delay(periods):
    train, delay, test = periods

    kept = remove_known_compromised(train, test, delay_period=delay, delay_days=0)

    # With labels known the next day, every earlier fraud counts. Only customer 4's
    # day-14 row (its fraud is that same day) and customer 5 remain.
    assert kept.index.tolist() == [106, 109]


def test_known_compromised_rejects_bad_input(periods):
    train, delay, test = periods

    with pytest.raises(ValueError, match="delay_days must be >= 0"):
        remove_known_compromised(train, test, delay_period=delay, delay_days=-1)
    with pytest.raises(ValueError, match=r"delay_period is missing column\(s\) \['TX_FRAUD'\]"):
        remove_known_compromised(train, test, delay_period=delay.drop(columns="TX_FRAUD"))


def test_transaction_days_from_datetimes():
    frame = pd.DataFrame(
        {
            "TX_DATETIME": pd.to_datetime(
                ["2018-04-01 00:00:01", "2018-04-01 23:59:59", "2018-04-03 00:00:00"]
            )
        }
    )

    days = transaction_days(frame)

    assert days[1] == days[0]
    assert days[2] == days[0] + 2


@pytest.fixture
def random_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y_true = (rng.random(5000) < 0.05).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.3 * y_true, 0.2), 0.0, 1.0)
    return y_true, scores


def test_metrics_match_sklearn(random_scores):
    y_true, scores = random_scores
    predictions = scores >= 0.55

    metrics = evaluate_scores(y_true, scores, threshold=0.55)

    assert metrics["auc_roc"] == pytest.approx(roc_auc_score(y_true, scores))
    assert metrics["average_precision"] == pytest.approx(average_precision_score(y_true, scores))
    assert metrics["recall_at_threshold"] == pytest.approx(recall_score(y_true, predictions))
    assert metrics["precision_at_threshold"] == pytest.approx(precision_score(y_true, predictions))
    assert metrics["f1_at_threshold"] == pytest.approx(f1_score(y_true, predictions))
    assert metrics["alert_rate"] == pytest.approx(predictions.mean())
    assert metrics["n_transactions"] == 5000
    assert metrics["n_frauds"] == int(y_true.sum())
    assert metrics["card_precision_at_100"] is None
    assert metrics["escalation_rate"] is None


def test_metrics_are_json_types(random_scores):
    y_true, scores = random_scores
    frame = pd.DataFrame(
        {"CUSTOMER_ID": np.arange(5000) % 900, "TX_TIME_DAYS": np.arange(5000) % 3}
    )

    metrics = evaluate_scores(y_true, scores, threshold=0.5, frame=frame, escalated=scores > 0.4)

    assert json.loads(json.dumps(metrics)) == metrics
    for name, value in metrics.items():
        assert type(value) in (float, int), name


def test_metrics_of_perfect_scorer():
    rng = np.random.default_rng(3)
    days = np.repeat(np.arange(4), 500)
    customers = np.arange(2000)
    y_true = (rng.random(2000) < 0.03).astype(int)
    frame = pd.DataFrame({"TX_TIME_DAYS": days, "CUSTOMER_ID": customers})

    metrics = evaluate_scores(y_true, y_true.astype(float), threshold=0.5, frame=frame)

    assert metrics["auc_roc"] == 1.0
    assert metrics["average_precision"] == 1.0
    assert metrics["recall_at_threshold"] == 1.0
    assert metrics["precision_at_threshold"] == 1.0
    # Every card appears once, so each day's fraud cards (fewer than 100) are all found.
    frauds_per_day = [y_true[days == day].sum() for day in range(4)]
    assert max(frauds_per_day) < 100
    assert metrics["card_precision_at_100"] == pytest.approx(np.mean(frauds_per_day) / 100)


def test_metrics_of_random_scorer():
    rng = np.random.default_rng(11)
    y_true = (rng.random(50_000) < 0.1).astype(int)

    metrics = evaluate_scores(y_true, rng.random(50_000), threshold=0.9)

    assert metrics["auc_roc"] == pytest.approx(0.5, abs=0.02)
    assert metrics["average_precision"] == pytest.approx(y_true.mean(), abs=0.02)
    assert metrics["recall_at_threshold"] == pytest.approx(0.1, abs=0.02)
    assert metrics["precision_at_threshold"] == pytest.approx(y_true.mean(), abs=0.02)


def test_metrics_escalation_rate():
    y_true = np.array([0, 1, 0, 1])

    metrics = evaluate_scores(
        y_true, [0.1, 0.9, 0.6, 0.4], threshold=0.5, escalated=[True, False, False, True]
    )

    assert metrics["escalation_rate"] == 0.5
    assert metrics["recall_at_threshold"] == 0.5
    assert metrics["precision_at_threshold"] == 0.5
    assert metrics["alert_rate"] == 0.5


def test_metrics_undefined_cases():
    metrics = evaluate_scores([0, 0, 0], [0.1, 0.2, 0.3], threshold=0.5)

    assert metrics["auc_roc"] is None
    assert metrics["average_precision"] is None
    assert metrics["recall_at_threshold"] is None
    assert metrics["precision_at_threshold"] is None
    assert metrics["f1_at_threshold"] is None
    assert metrics["alert_rate"] == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="y_true must contain only 0 and 1, got 2"):
        evaluate_scores([0, 2], [0.1, 0.2], threshold=0.5)
    with pytest.raises(ValueError, match="scores contains 1 NaN or inf values"):
        evaluate_scores([0, 1], [0.1, np.nan], threshold=0.5)
    with pytest.raises(ValueError, match="scores has 1 values, expected 2"):
        evaluate_scores([0, 1], [0.1], threshold=0.5)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        evaluate_scores([0, 1], [0.1, 0.2], threshold=float("nan"))
    with pytest.raises(ValueError, match="escalated has 3 values, expected 2"):
        evaluate_scores([0, 1], [0.1, 0.2], threshold=0.5, escalated=[True, False, True])
    with pytest.raises(ValueError, match="frame has 1 rows, expected 2"):
        evaluate_scores(
            [0, 1],
            [0.1, 0.2],
            threshold=0.5,
            frame=pd.DataFrame({"CUSTOMER_ID": [1], "TX_TIME_DAYS": [0]}),
        )
