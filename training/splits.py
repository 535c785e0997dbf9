"""Time-ordered splits: train, a delay gap, validation, a delay gap, test.

Fraud labels arrive late (a card holder reports a fraud days afterwards), so the days
right before a period are left out of the data that precedes it. A model trained up to
day t is therefore never evaluated on day t + 1 with labels it could not have had.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from training import columns

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """Lengths of the periods in days; ``test_start`` defaults to the last full test period."""

    test_days: int = 7
    validation_days: int = 7
    delay_days: int = 7
    train_days: int | None = None
    test_start: str | None = None
    train_start: str | None = None
    seed: int = 42


@dataclass
class Splits:
    """The three periods and a description of their bounds for the manifest."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    description: dict[str, Any] = field(default_factory=dict)


def split_history(frame: pd.DataFrame, config: SplitConfig, label: str) -> Splits:
    """Split by date when the data has ``TX_DATETIME``; else stratified 60/20/20."""
    if columns.DATETIME in frame.columns:
        return _split_by_time(frame, config)
    logger.warning("no %s column: falling back to a stratified random split", columns.DATETIME)
    return _split_stratified(frame, config, label)


def _split_by_time(frame: pd.DataFrame, config: SplitConfig) -> Splits:
    day = frame[columns.DATETIME].dt.normalize()
    first_day, last_day = day.min(), day.max()
    one = pd.Timedelta(days=1)

    test_start = (pd.Timestamp(config.test_start) if config.test_start
                  else last_day - (config.test_days - 1) * one)
    test_end = test_start + config.test_days * one
    validation_start = test_start - (config.delay_days + config.validation_days) * one
    validation_end = validation_start + config.validation_days * one
    train_end = validation_start - config.delay_days * one
    if config.train_start:
        train_start = pd.Timestamp(config.train_start)
    elif config.train_days:
        train_start = train_end - config.train_days * one
    else:
        train_start = first_day

    if test_end > last_day + one:
        raise ValueError(
            f"test period {test_start.date()} + {config.test_days} days runs past the last "
            f"day of data {last_day.date()}"
        )
    if train_start >= train_end:
        raise ValueError(
            f"no training days left: the data starts {first_day.date()}, training would "
            f"have to end before {train_end.date()}; use fewer test/validation/delay days"
        )

    def between(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return frame[(day >= start) & (day < end)].reset_index(drop=True)

    splits = Splits(
        train=between(train_start, train_end),
        validation=between(validation_start, validation_end),
        test=between(test_start, test_end),
    )
    splits.description = {
        "method": "time",
        "train": [str(train_start.date()), str((train_end - one).date())],
        "validation": [str(validation_start.date()), str((validation_end - one).date())],
        "test": [str(test_start.date()), str((test_end - one).date())],
        "delay_days": config.delay_days,
    }
    _check_not_empty(splits)
    return splits


def _split_stratified(frame: pd.DataFrame, config: SplitConfig, label: str) -> Splits:
    train, rest = train_test_split(
        frame, test_size=0.4, stratify=frame[label], random_state=config.seed
    )
    validation, test = train_test_split(
        rest, test_size=0.5, stratify=rest[label], random_state=config.seed
    )
    splits = Splits(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
        description={"method": "stratified", "fractions": [0.6, 0.2, 0.2], "seed": config.seed},
    )
    _check_not_empty(splits)
    return splits


def _check_not_empty(splits: Splits) -> None:
    for name in ("train", "validation", "test"):
        part = getattr(splits, name)
        if len(part) == 0:
            raise ValueError(f"the {name} period is empty: {splits.description}")
    splits.description["rows"] = {
        "train": len(splits.train),
        "validation": len(splits.validation),
        "test": len(splits.test),
    }
