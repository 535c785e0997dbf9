"""Tests of loading transaction files into a real PostgreSQL server and reading them back."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from training.ingest import ingest_file, read_table
from training.simulate import simulate, write_transactions

DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
requires_postgres = pytest.mark.skipif(
    not DATABASE_URL, reason="TEST_DATABASE_URL is not set; it names a PostgreSQL database"
)
CHUNK_SIZE = 1000


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return simulate(n_customers=150, n_terminals=300, n_days=20, seed=11)


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(DATABASE_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def table(engine) -> Iterator[str]:
    name = f"test_transactions_{uuid.uuid4().hex[:12]}"
    yield name
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))


@pytest.fixture
def parquet_file(tmp_path, transactions) -> Path:
    return write_transactions(transactions, tmp_path / "transactions.parquet")


@pytest.fixture
def csv_file(tmp_path, transactions) -> Path:
    return write_transactions(transactions, tmp_path / "transactions.csv")


def count_rows(engine: sa.Engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()


@pytest.mark.postgres
@requires_postgres
@pytest.mark.parametrize("source", ["parquet_file", "csv_file"])
def test_ingest_twice_inserts_once(request, engine, table, transactions, source):
    path = request.getfixturevalue(source)

    first = ingest_file(path, engine, table=table, chunk_size=CHUNK_SIZE, progress=False)
    assert first == len(transactions)
    assert count_rows(engine, table) == len(transactions)

    second = ingest_file(path, engine, table=table, chunk_size=CHUNK_SIZE, progress=False)
    assert second == 0
    assert count_rows(engine, table) == len(transactions)


@pytest.mark.postgres
@requires_postgres
@pytest.mark.parametrize("source", ["parquet_file", "csv_file"])
def test_read_table_round_trip(request, table, transactions, source):
    path = request.getfixturevalue(source)
    ingest_file(path, DATABASE_URL, table=table, chunk_size=CHUNK_SIZE, progress=False)

    back = read_table(DATABASE_URL, table, chunk_size=CHUNK_SIZE)
    pd.testing.assert_frame_equal(back, transactions)


@pytest.mark.postgres
@requires_postgres
def test_read_table_selected_columns(engine, table, parquet_file, transactions):
    ingest_file(parquet_file, engine, table=table, progress=False)
    columns = ["TX_FRAUD", "TRANSACTION_ID", "TERMINAL_ID_RISK_7DAY_WINDOW", "TX_DATETIME"]

    back = read_table(engine, table, columns)
    pd.testing.assert_frame_equal(back, transactions[columns])


@pytest.mark.postgres
@requires_postgres
def test_read_table_unknown_column(engine, table, parquet_file):
    ingest_file(parquet_file, engine, table=table, progress=False)
    with pytest.raises(ValueError, match="NOT_A_COLUMN"):
        read_table(engine, table, ["TX_AMOUNT", "NOT_A_COLUMN"])
    with pytest.raises(ValueError, match="at least one column"):
        read_table(engine, table, [])


@pytest.mark.postgres
@requires_postgres
def test_read_table_missing_table(engine, table):
    with pytest.raises(ValueError, match=table):
        read_table(engine, table)


@pytest.mark.postgres
@requires_postgres
def test_ingest_resumes_partial_load(engine, table, tmp_path, transactions):
    half = len(transactions) // 2
    first_half = write_transactions(transactions.iloc[:half], tmp_path / "half.parquet")
    full = write_transactions(transactions, tmp_path / "full.parquet")

    assert ingest_file(first_half, engine, table=table, progress=False) == half
    inserted = ingest_file(full, engine, table=table, chunk_size=CHUNK_SIZE, progress=False)
    assert inserted == len(transactions) - half
    assert count_rows(engine, table) == len(transactions)


@pytest.mark.postgres
@requires_postgres
def test_ingest_skips_duplicate_ids(engine, table, tmp_path, transactions):
    doubled = pd.concat([transactions.iloc[:100], transactions.iloc[:100]], ignore_index=True)
    path = write_transactions(doubled, tmp_path / "doubled.parquet")

    inserted = ingest_file(path, engine, table=table, progress=False)
    assert inserted == 100
    assert count_rows(engine, table) == 100


@pytest.mark.postgres
@requires_postgres
def test_ingest_requires_transaction_id(engine, table, tmp_path, transactions):
    path = write_transactions(
        transactions.drop(columns="TRANSACTION_ID"), tmp_path / "no_id.parquet"
    )
    with pytest.raises(ValueError, match="TRANSACTION_ID"):
        ingest_file(path, engine, table=table, progress=False)


@pytest.mark.postgres
@requires_postgres
def test_ingest_creates_lower_case_columns(engine, table, parquet_file):
    ingest_file(parquet_file, engine, table=table, progress=False)
    inspector = sa.inspect(engine)
    columns = {column["name"]: column for column in inspector.get_columns(table)}
    assert inspector.get_pk_constraint(table)["constrained_columns"] == ["transaction_id"]
    assert isinstance(columns["tx_amount"]["type"], sa.Float)
    assert isinstance(columns["tx_datetime"]["type"], sa.DateTime)
    assert isinstance(columns["customer_id"]["type"], sa.BigInteger)


@pytest.mark.parametrize(
    "name",
    ["transactions; DROP TABLE x", "1transactions", "tx-2025", "", "a" * 64, 'tx"', "public.tx"],
)
def test_invalid_table_name_rejected(tmp_path, name):
    path = tmp_path / "unused.parquet"
    url = "postgresql+pg8000://nobody@127.0.0.1:1/none"
    with pytest.raises(ValueError, match="invalid table name") as ingest_error:
        ingest_file(path, url, table=name, progress=False)
    assert repr(name) in str(ingest_error.value)
    with pytest.raises(ValueError, match="invalid table name"):
        read_table(url, name)


def test_ingest_rejects_unknown_suffix(tmp_path):
    path = tmp_path / "transactions.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        ingest_file(path, "postgresql+pg8000://nobody@127.0.0.1:1/none", progress=False)


def test_ingest_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        ingest_file(
            tmp_path / "missing.parquet",
            "postgresql+pg8000://nobody@127.0.0.1:1/none",
            progress=False,
        )
