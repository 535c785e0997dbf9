"""Feature schema validation: ranges, whole numbers, exact values in messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudscore.exceptions import FeatureValidationError
from fraudscore.schema import FeatureSchema, FeatureSpec
from training.pipeline import build_schema

SCHEMA = FeatureSchema([
    FeatureSpec("amount", 0.0, 1e6),
    FeatureSpec("count", 0.0, 1e6, integer=True),
    FeatureSpec("flag", 0.0, 1.0, integer=True),
])
VALID = {"amount": 12.5, "count": 3, "flag": 1}


def test_valid_row_in_schema_order() -> None:
    vector = SCHEMA.validate({"flag": 0, "amount": 1.5, "count": 2.0})

    np.testing.assert_array_equal(vector, [1.5, 2.0, 0.0])


@pytest.mark.parametrize("field, value, message", [
    ("count", 2.5, "must be a whole number, got 2.5"),
    ("flag", 0.5, "must be a whole number, got 0.5"),
    ("amount", 1000000.01, "must be between 0.0 and 1000000.0, got 1000000.01"),
    ("flag", 2, "must be between 0.0 and 1.0, got 2.0"),
])
def test_invalid_value_named_exactly(field: str, value: float, message: str) -> None:
    with pytest.raises(FeatureValidationError) as info:
        SCHEMA.validate({**VALID, field: value})

    assert info.value.field == field
    assert info.value.message == message


def test_batch_whole_numbers_checked() -> None:
    rows = [dict(VALID) for _ in range(40)]
    rows[17] = {**VALID, "count": 1.25}

    with pytest.raises(FeatureValidationError) as info:
        SCHEMA.validate_many(rows)

    assert info.value.row == 17
    assert info.value.field == "count"


def test_all_missing_features_listed() -> None:
    with pytest.raises(FeatureValidationError) as info:
        SCHEMA.validate({"amount": -5.0})

    assert info.value.field == "count"
    assert "2 missing: count, flag" in info.value.message


def test_training_ranges_admit_large_purchases() -> None:
    frame = pd.DataFrame({"TX_AMOUNT": [1.0, 250.0, 1058.1], "NB_TX": [0.0, 3.0, 170.0],
                          "RISK": [0.0, 0.25, 1.0], "DELTA": [-2.0, 0.5, 3.0]})

    schema = build_schema(frame, list(frame.columns))
    specs = {spec.name: spec for spec in schema.features}

    assert specs["TX_AMOUNT"].maximum >= 1_000_000
    assert specs["TX_AMOUNT"].observed_maximum == 1058.1
    assert specs["TX_AMOUNT"].integer is False
    assert specs["NB_TX"].integer is True
    assert specs["RISK"].maximum == 1.0
    assert specs["DELTA"].minimum == -2000.0
    schema.validate({"TX_AMOUNT": 20_000.0, "NB_TX": 400, "RISK": 0.5, "DELTA": -10.0})


def test_schema_round_trips_through_json() -> None:
    assert FeatureSchema.from_list(SCHEMA.to_list()) == SCHEMA
