"""Reading transaction history and checking it before training."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from training import columns

logger = logging.getLogger(__name__)

# A single column that separates the classes this well is almost surely derived from
# the label (or from the future), not a legitimate predictor.
LEAKAGE_AUC = 0.999


class DataError(ValueError):
    """The training data is missing a column or is unusable as given."""


def read_history(
    path: str | Path | None = None,
    *,
    database_url: str | None = None,
    table: str = "transactions",
    needed: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read transaction history from a Parquet/CSV file or a PostgreSQL table.

    Parameters
    ----------
    path : str or Path, optional
        ``.parquet`` or ``.csv`` file. Exactly one of ``path`` and ``database_url``.
    database_url : str, optional
        SQLAlchemy URL of the PostgreSQL database holding ``table``.
    needed : sequence of str, optional
        Columns to read; others are skipped (Parquet and PostgreSQL only).
    """
    if (path is None) == (database_url is None):
        raise DataError("give exactly one of a data file or a database URL")
    if database_url is not None:
        from training.ingest import read_table

        frame = read_table(database_url, table, columns=list(needed) if needed else None)
        source = f"table {table}"
    else:
        frame = _read_file(Path(path), needed)  # type: ignore[arg-type]
        source = str(path)
    if columns.DATETIME in frame.columns:
        frame[columns.DATETIME] = pd.to_datetime(frame[columns.DATETIME])
        frame = frame.sort_values(columns.DATETIME, kind="stable").reset_index(drop=True)
    logger.info("read %d transactions from %s", len(frame), source)
    return frame


def _read_file(path: Path, needed: Sequence[str] | None) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        present = set(_parquet_columns(path))
        wanted = [name for name in needed if name in present] if needed else None
        return pd.read_parquet(path, columns=wanted)
    if suffix == ".csv":
        return pd.read_csv(path, usecols=lambda name: needed is None or name in needed)
    raise DataError(f"unsupported data file type {suffix!r}: use .parquet or .csv")


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def check_columns(frame: pd.DataFrame, features: Sequence[str], label: str) -> None:
    """Raise DataError when a column is missing, not numeric, or leaks the label."""
    missing = [name for name in (*features, label) if name not in frame.columns]
    if missing:
        raise DataError(f"columns not found in the data: {', '.join(missing)}")
    leaking = sorted(set(features) & (columns.LABEL_DERIVED | {label}))
    if leaking:
        raise DataError(f"feature(s) derived from the label cannot be used: {', '.join(leaking)}")
    for name in features:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            raise DataError(f"feature {name} must be numeric, has dtype {frame[name].dtype}")
        if frame[name].isna().any():
            raise DataError(f"feature {name} has {int(frame[name].isna().sum())} missing values")

    labels = frame[label]
    if not set(np.unique(labels)).issubset({0, 1}):
        raise DataError(f"label {label} must contain only 0 and 1")
    if labels.nunique() < 2:
        raise DataError(f"label {label} has a single class; both 0 and 1 are needed")


def check_leakage(frame: pd.DataFrame, features: Sequence[str], label: str) -> None:
    """Raise DataError when one feature alone predicts the label almost perfectly."""
    y = frame[label].to_numpy()
    for name in features:
        values = frame[name].to_numpy(dtype=np.float64)
        auc = roc_auc_score(y, values)
        if max(auc, 1.0 - auc) >= LEAKAGE_AUC:
            raise DataError(
                f"feature {name} alone separates the label with AUC {max(auc, 1 - auc):.4f}; "
                "it is almost surely derived from the label. Remove it from --features."
            )


def fingerprint(frame: pd.DataFrame, used: Sequence[str]) -> str:
    """SHA-256 over the values of the columns used for training, in row order."""
    digest = hashlib.sha256()
    digest.update(",".join(used).encode("utf-8"))
    hashed = pd.util.hash_pandas_object(frame[list(used)], index=False).to_numpy()
    digest.update(hashed.tobytes())
    return digest.hexdigest()
