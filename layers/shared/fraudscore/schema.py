"""Feature schema: the ordered model inputs and the values each one accepts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudscore.exceptions import FeatureValidationError

MAX_FEATURE_NAME_LENGTH = 128

# From this many rows on, validate_many checks ranges with numpy instead of per value.
_VECTORIZED_MIN_ROWS = 16


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One model input: its name, the closed range of values it accepts, and whether
    only whole numbers are valid (flags and counts).

    ``observed_minimum`` and ``observed_maximum`` record the range seen in training, for
    drift monitoring; values outside it but inside ``[minimum, maximum]`` are scored.
    """

    name: str
    minimum: float
    maximum: float
    integer: bool = False
    observed_minimum: float | None = None
    observed_maximum: float | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "integer": self.integer,
            "observed_minimum": self.observed_minimum,
            "observed_maximum": self.observed_maximum,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSpec:
        observed_minimum = raw.get("observed_minimum")
        observed_maximum = raw.get("observed_maximum")
        return cls(
            name=str(raw["name"]),
            minimum=float(raw["minimum"]),
            maximum=float(raw["maximum"]),
            integer=bool(raw.get("integer", False)),
            observed_minimum=None if observed_minimum is None else float(observed_minimum),
            observed_maximum=None if observed_maximum is None else float(observed_maximum),
            description=str(raw.get("description", "")),
        )


class FeatureSchema:
    """Ordered feature specs with validation of incoming transactions.

    Parameters
    ----------
    features : sequence of FeatureSpec
        Model inputs in the order the models expect them.
    """

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        names = [spec.name for spec in features]
        if not names:
            raise ValueError("a feature schema needs at least one feature")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in schema: {names}")
        for spec in features:
            if not spec.minimum <= spec.maximum:
                raise ValueError(f"feature {spec.name!r}: minimum exceeds maximum")
        self.features: tuple[FeatureSpec, ...] = tuple(features)
        self.names: tuple[str, ...] = tuple(names)
        self._index = {name: i for i, name in enumerate(names)}
        self._minimum = np.array([spec.minimum for spec in features], dtype=np.float64)
        self._maximum = np.array([spec.maximum for spec in features], dtype=np.float64)
        self._bounds = tuple((spec.name, spec.minimum, spec.maximum) for spec in features)
        self._integer = np.array([spec.integer for spec in features], dtype=bool)

    def __len__(self) -> int:
        return len(self.features)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSchema) and self.features == other.features

    def __hash__(self) -> int:
        return hash(self.features)

    def to_list(self) -> list[dict[str, Any]]:
        return [spec.to_dict() for spec in self.features]

    @classmethod
    def from_list(cls, raw: Sequence[Mapping[str, Any]]) -> FeatureSchema:
        return cls([FeatureSpec.from_dict(item) for item in raw])

    def validate(self, features: Mapping[str, Any]) -> np.ndarray:
        """Check one transaction's features and return them as a vector in schema order.

        Parameters
        ----------
        features : mapping of str to number
            Feature name to value. Every schema feature must be present, no other key
            is allowed, and each value must be a finite int or float (not a bool)
            inside the feature's range.

        Returns
        -------
        ndarray of shape (n_features,)
            Float64 values in schema order.

        Raises
        ------
        FeatureValidationError
            Naming the first offending field.
        """
        vector = self._validate_plain(features)
        if vector is not None:
            return vector
        return self._validate_checked(features)

    def _validate_plain(self, features: Mapping[str, Any]) -> np.ndarray | None:
        """Return the vector when every value is a plain in-range int or float, else None.

        This is the common case, checked in one pass. On None the caller runs
        ``_validate_checked``, which finds and raises the exact error.
        """
        values = []
        try:
            if len(features) != len(self._bounds):
                return None
            for name, minimum, maximum in self._bounds:
                value = features[name]
                kind = type(value)
                if (kind is not float and kind is not int) or not minimum <= value <= maximum:
                    return None
                values.append(value)
            vector = np.array(values, dtype=np.float64)
        except (KeyError, TypeError, OverflowError):
            return None
        if not np.isfinite(vector).all() or not self._whole_where_required(vector):
            return None
        return vector

    def _whole_where_required(self, values: np.ndarray) -> bool:
        if not self._integer.any():
            return True
        required = values[..., self._integer]
        return bool((required == np.floor(required)).all())

    def _validate_checked(self, features: Mapping[str, Any]) -> np.ndarray:
        unknown = [name for name in features if name not in self._index]
        if unknown:
            shown = sorted(unknown)[0][:MAX_FEATURE_NAME_LENGTH]
            raise FeatureValidationError(
                shown, f"unknown feature; expected only {len(self.names)} schema features"
            )
        missing = [name for name in self.names if name not in features]
        if missing:
            others = f" ({len(missing)} missing: {', '.join(missing)})" if len(missing) > 1 else ""
            raise FeatureValidationError(missing[0], f"missing required feature{others}")
        vector = np.empty(len(self.names), dtype=np.float64)
        for position, spec in enumerate(self.features):
            vector[position] = self._check_value(spec, features[spec.name])
        return vector

    def validate_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Validate several transactions; return a matrix of shape (n_rows, n_features).

        The raised FeatureValidationError carries the index of the offending row.
        """
        if len(rows) >= _VECTORIZED_MIN_ROWS:
            matrix = self._validate_many_plain(rows)
            if matrix is not None:
                return matrix
        matrix = np.empty((len(rows), len(self.names)), dtype=np.float64)
        for i, row in enumerate(rows):
            try:
                matrix[i] = self.validate(row)
            except FeatureValidationError as exc:
                raise FeatureValidationError(exc.field, exc.message, row=i) from None
        return matrix

    def _validate_many_plain(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
        """Batch form of ``_validate_plain``: ranges checked with numpy, None on any doubt."""
        names = self.names
        width = len(names)
        try:
            if sum(len(row) for row in rows) != len(rows) * width:
                return None
            flat = [row[name] for row in rows for name in names]
            if not {type(value) for value in flat} <= {float, int}:
                return None
            matrix = np.array(flat, dtype=np.float64).reshape(len(rows), width)
        except (KeyError, TypeError, OverflowError):
            return None
        inside = (matrix >= self._minimum) & (matrix <= self._maximum) & np.isfinite(matrix)
        return matrix if inside.all() and self._whole_where_required(matrix) else None

    def as_dict(self, vector: np.ndarray) -> dict[str, float]:
        """Map a vector in schema order back to feature name to value."""
        return {name: float(value) for name, value in zip(self.names, vector, strict=True)}

    @staticmethod
    def _check_value(spec: FeatureSpec, value: Any) -> float:
        if value is None:
            raise FeatureValidationError(spec.name, "must be a number, got null")
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = type(value).__name__
            raise FeatureValidationError(spec.name, f"must be a number, got {kind}")
        try:
            number = float(value)
        except OverflowError as exc:
            raise FeatureValidationError(spec.name, "number is too large") from exc
        if not math.isfinite(number):
            raise FeatureValidationError(spec.name, f"must be finite, got {number}")
        if not spec.minimum <= number <= spec.maximum:
            raise FeatureValidationError(
                spec.name,
                f"must be between {spec.minimum!r} and {spec.maximum!r}, got {number!r}",
            )
        if spec.integer and not number.is_integer():
            raise FeatureValidationError(spec.name, f"must be a whole number, got {number!r}")
        return number
