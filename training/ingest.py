"""Load transaction files into PostgreSQL and read them back as a frame.

The table has lower-case column names and TRANSACTION_ID as primary key. Rows whose
TRANSACTION_ID is already stored are skipped, so ingesting a file twice is harmless and
an interrupted run can be restarted.

Each chunk is sent as one ``INSERT ... SELECT FROM unnest(...)`` statement with one array
parameter per column. With pg8000 this is much faster than a multi-row VALUES list,
because pg8000 parses the SQL text of every statement in Python.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from tqdm import tqdm

from training.features import TRANSACTION_DTYPES

logger = logging.getLogger(__name__)

PRIMARY_KEY = "TRANSACTION_ID"
DATETIME_COLUMNS = tuple(name for name, dtype in TRANSACTION_DTYPES.items() if "datetime" in dtype)

# Unquoted PostgreSQL identifiers: a letter or underscore, then letters, digits or
# underscores, at most 63 bytes.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def ingest_file(
    path: str | Path,
    database_url: str | sa.Engine,
    *,
    table: str = "transactions",
    chunk_size: int = 50_000,
    progress: bool = True,
) -> int:
    """Insert the transactions of a Parquet or CSV file into a PostgreSQL table.

    The table is created if missing, with SQL types taken from the file (and for CSV,
    from ``TRANSACTION_DTYPES`` where a column name matches). Each chunk is inserted
    with ``INSERT ... ON CONFLICT (transaction_id) DO NOTHING`` and committed on its own.
    PostgreSQL TIMESTAMP stores microseconds, so finer parts of a timestamp are rounded.

    Parameters
    ----------
    path : str or Path
        A ``.parquet`` or ``.csv`` file with a TRANSACTION_ID column.
    database_url : str or sqlalchemy.Engine
        A PostgreSQL URL such as ``postgresql+pg8000://user@host:5432/db``, or an engine.
    table : str, default "transactions"
        Table name; letters, digits and underscores only.
    chunk_size : int, default 50000
        Rows read and committed at a time.
    progress : bool, default True
        Show a tqdm progress bar on stderr.

    Returns
    -------
    int
        Number of rows inserted; rows already in the table are not counted.
    """
    path = Path(path)
    validate_table_name(table)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    reader, total_rows = _open_chunks(path, chunk_size, count_rows=progress)

    engine = _engine(database_url)
    inserted = 0
    try:
        first = next(reader, None)
        if first is None:
            logger.info("No rows in %s, nothing to insert", path)
            return 0
        target = _ensure_table(engine, table, first.schema)
        statement = _insert_statement(target, [name.lower() for name in first.schema.names])

        with tqdm(total=total_rows, unit="row", desc=path.name, disable=not progress) as bar:
            for chunk in _prepend(first, reader):
                inserted += _insert_chunk(engine, statement, chunk)
                bar.update(chunk.num_rows)
    finally:
        if not isinstance(database_url, sa.Engine):
            engine.dispose()

    logger.info("Inserted %d new rows from %s into table %s", inserted, path, table)
    return inserted


def read_table(
    database_url: str | sa.Engine,
    table: str = "transactions",
    columns: Sequence[str] | None = None,
    *,
    chunk_size: int = 100_000,
) -> pd.DataFrame:
    """Read a transaction table into a frame with upper-case column names.

    Columns listed in ``TRANSACTION_DTYPES`` get that dtype; others keep the dtype pandas
    infers. Rows are ordered by TX_DATETIME (when the table has it), then TRANSACTION_ID.

    Parameters
    ----------
    database_url : str or sqlalchemy.Engine
        A PostgreSQL URL or an engine.
    table : str, default "transactions"
        Table name; letters, digits and underscores only.
    columns : sequence of str, optional
        Upper-case column names to read, in this order; all columns by default.
    chunk_size : int, default 100000
        Rows fetched at a time through a server-side cursor.

    Returns
    -------
    pandas.DataFrame
        The table's rows with a fresh RangeIndex.
    """
    validate_table_name(table)
    engine = _engine(database_url)
    try:
        source = _reflect_table(engine, table)
        selected = _select_columns(source, table, columns)
        order = [
            source.c[name.lower()]
            for name in ("TX_DATETIME", PRIMARY_KEY)
            if name.lower() in source.c
        ]
        query = sa.select(*[source.c[name.lower()] for name in selected]).order_by(*order)

        frames = []
        with engine.connect() as connection:
            result = connection.execution_options(yield_per=chunk_size).execute(query)
            for rows in result.partitions():
                frames.append(_rows_to_frame(rows, selected))
    finally:
        if not isinstance(database_url, sa.Engine):
            engine.dispose()

    if not frames:
        return _rows_to_frame([], selected)
    return pd.concat(frames, ignore_index=True)


def validate_table_name(table: str) -> str:
    """Return ``table`` unchanged if it is a plain SQL identifier, else raise ValueError."""
    if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
        raise ValueError(
            f"invalid table name {table!r}: use 1 to 63 letters, digits or underscores, "
            "not starting with a digit"
        )
    return table


def _engine(database_url: str | sa.Engine) -> sa.Engine:
    engine = database_url if isinstance(database_url, sa.Engine) else sa.create_engine(database_url)
    if engine.dialect.name != "postgresql":
        raise ValueError(
            f"database_url must point to PostgreSQL, got dialect {engine.dialect.name!r}"
        )
    return engine


def _open_chunks(
    path: Path, chunk_size: int, *, count_rows: bool
) -> tuple[Iterator[pa.RecordBatch], int | None]:
    """Return an iterator over the file's record batches and, if requested, its row count."""
    if not path.is_file():
        raise FileNotFoundError(f"transaction file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        parquet = pq.ParquetFile(path)
        return parquet.iter_batches(batch_size=chunk_size), parquet.metadata.num_rows
    if suffix == ".csv":
        return _csv_batches(path, chunk_size), _count_csv_rows(path) if count_rows else None
    raise ValueError(f"transaction file must end in .parquet or .csv, got {str(path)!r}")


def _count_csv_rows(path: Path) -> int:
    """Count the data lines of a CSV file, for the progress bar only.

    NOTE: a quoted field that spans lines is counted once per line.
    """
    lines = 0
    last = b"\n"
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - 1)


def _csv_batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
    """Read a CSV file in chunks, casting the known transaction columns to their dtypes."""
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {
        name: dtype
        for name, dtype in TRANSACTION_DTYPES.items()
        if name in header and name not in DATETIME_COLUMNS
    }
    schema = None
    with pd.read_csv(path, chunksize=chunk_size, dtype=dtypes) as chunks:
        for chunk in chunks:
            for name in DATETIME_COLUMNS:
                if name in chunk.columns:
                    chunk[name] = pd.to_datetime(chunk[name]).astype("datetime64[ns]")
            batch = pa.RecordBatch.from_pandas(chunk, schema=schema, preserve_index=False)
            schema = batch.schema
            yield batch


def _prepend(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _sql_type(field: pa.Field) -> sa.types.TypeEngine[Any]:
    """Map an Arrow field type to a PostgreSQL column type."""
    kind = field.type
    if pa.types.is_int8(kind) or pa.types.is_int16(kind) or pa.types.is_uint8(kind):
        return sa.SmallInteger()
    if pa.types.is_int32(kind) or pa.types.is_uint16(kind):
        return sa.Integer()
    if pa.types.is_int64(kind) or pa.types.is_uint32(kind):
        return sa.BigInteger()
    if pa.types.is_float16(kind) or pa.types.is_float32(kind):
        return postgresql.REAL()
    if pa.types.is_float64(kind):
        return postgresql.DOUBLE_PRECISION()
    if pa.types.is_boolean(kind):
        return sa.Boolean()
    if pa.types.is_timestamp(kind):
        return postgresql.TIMESTAMP(timezone=kind.tz is not None)
    if pa.types.is_date(kind):
        return sa.Date()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return sa.Text()
    raise ValueError(
        f"column {field.name!r} has unsupported type {kind}; cast it to an integer, float, "
        "boolean, timestamp, date or string type"
    )


def _ensure_table(engine: sa.Engine, table: str, schema: pa.Schema) -> sa.Table:
    """Create the table from the file's schema if missing and check its columns."""
    if PRIMARY_KEY not in schema.names:
        raise ValueError(
            f"transaction file has no {PRIMARY_KEY} column. Columns found: {schema.names}"
        )
    lower = [name.lower() for name in schema.names]
    if len(set(lower)) != len(lower):
        raise ValueError(f"column names must differ in more than case, got {schema.names}")

    columns = [
        sa.Column(
            field.name.lower(),
            _sql_type(field),
            primary_key=field.name == PRIMARY_KEY,
            autoincrement=False,
        )
        for field in schema
    ]
    target = sa.Table(table, sa.MetaData(), *columns)
    target.metadata.create_all(engine, checkfirst=True)

    existing = {column["name"] for column in sa.inspect(engine).get_columns(table)}
    missing = [name for name in lower if name not in existing]
    if missing:
        raise ValueError(
            f"table {table!r} exists but lacks the file's columns {missing}; "
            "drop the table or choose another table name"
        )
    return target


def _insert_statement(target: sa.Table, names: list[str]) -> sa.Insert:
    """Build an INSERT that unnests one array parameter per column and skips known ids."""
    arrays = [sa.bindparam(name, type_=postgresql.ARRAY(target.c[name].type)) for name in names]
    source = sa.func.unnest(*arrays).table_valued(*names).render_derived(name="source")
    return (
        postgresql.insert(target)
        .from_select(names, sa.select(*source.c))
        .on_conflict_do_nothing(index_elements=[PRIMARY_KEY.lower()])
    )


def _insert_chunk(engine: sa.Engine, statement: sa.Insert, chunk: pa.RecordBatch) -> int:
    """Insert one batch in its own transaction and return the number of new rows."""
    arrays = {
        name.lower(): column.to_pylist()
        for name, column in zip(chunk.schema.names, chunk.columns, strict=True)
    }
    with engine.begin() as connection:
        result = connection.execute(statement, arrays)
        return result.rowcount


def _reflect_table(engine: sa.Engine, table: str) -> sa.Table:
    try:
        return sa.Table(table, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError as exc:
        raise ValueError(f"table {table!r} not found in the database") from exc


def _select_columns(source: sa.Table, table: str, columns: Sequence[str] | None) -> list[str]:
    """Return the upper-case names to read, checking each exists in ``source``."""
    if columns is None:
        return [column.name.upper() for column in source.columns]
    selected = list(columns)
    if not selected:
        raise ValueError("columns must name at least one column, or be None for all columns")
    missing = [name for name in selected if name.lower() not in source.c]
    if missing:
        available = [column.name.upper() for column in source.columns]
        raise ValueError(
            f"table {table!r} has no columns {missing}. Available columns: {available}"
        )
    return [name.upper() for name in selected]


def _rows_to_frame(rows: Sequence[Sequence[Any]], names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(rows), columns=names)
    for name in names:
        dtype = TRANSACTION_DTYPES.get(name)
        if dtype is not None:
            frame[name] = frame[name].astype(dtype)
    return frame
