"""Audit trail: one row per decision in PostgreSQL (or SQLite for the local demo).

The table is created by an explicit command (``python -m fraudscore.audit_schema``),
never per request. A single decision is one ``INSERT ... ON CONFLICT DO NOTHING
RETURNING`` statement in autocommit mode: one round trip to PostgreSQL. A batch is one
multi-row statement per 1,000 rows inside one transaction.

Two keys make writes idempotent. ``decision_id`` is the primary key, so replaying a
record from the fallback spool or queue never duplicates it. ``idempotency_key`` (the
transaction id) is unique, so a client that repeats a transaction id gets the stored
decision back, or :class:`IdempotencyConflictError` when the features differ.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from fraudscore.database import Connection, Database, open_database_url
from fraudscore.exceptions import AuditError, DatabaseError, IdempotencyConflictError

logger = logging.getLogger(__name__)

TABLE = "audit_decisions"

# Every column with its (PostgreSQL type, SQLite type), in the order of every INSERT and
# SELECT below. Columns are NOT NULL unless listed in _NULLABLE.
_COLUMN_TYPES = {
    "decision_id": ("varchar(64) PRIMARY KEY", "TEXT PRIMARY KEY"),
    "request_id": ("varchar(128)", "TEXT"),
    "transaction_id": ("varchar(128)", "TEXT"),
    "decided_at": ("timestamptz", "TEXT"),
    "features": ("jsonb", "TEXT"),
    "features_sha256": ("varchar(64)", "TEXT"),
    "stage1_probability": ("double precision", "REAL"),
    "stage2_probability": ("double precision", "REAL"),
    "final_probability": ("double precision", "REAL"),
    "is_fraud": ("boolean", "BOOLEAN"),
    "stage": ("varchar(16)", "TEXT"),
    "model_version": ("varchar(64)", "TEXT"),
    "latency_ms": ("double precision", "REAL"),
    "degraded": ("boolean DEFAULT false", "BOOLEAN DEFAULT 0"),
    "degraded_reason": ("varchar(64)", "TEXT"),
    "manual_review": ("boolean DEFAULT false", "BOOLEAN DEFAULT 0"),
    # Equal to transaction_id, except for a replayed record whose transaction id was taken
    # by a decision with other features while the database was down. That record is kept
    # under "<transaction_id>#conflict#<decision_id>" with idempotency_conflict set.
    "idempotency_key": ("varchar(256) UNIQUE", "TEXT UNIQUE"),
    "idempotency_conflict": ("boolean DEFAULT false", "BOOLEAN DEFAULT 0"),
}
COLUMNS = tuple(_COLUMN_TYPES)
_NULLABLE = {"stage2_probability", "degraded_reason"}
_INDEXES = {
    "ix_audit_decisions_transaction_id": "transaction_id",
    "ix_audit_decisions_decided_at": "decided_at",
}

_INSERT_HEAD = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)})"
_INSERT_TAIL = "ON CONFLICT DO NOTHING RETURNING decision_id"
_KEY_INDEX = COLUMNS.index("idempotency_key")
_SELECT_ALL = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - constant names

# Rows per multi-row INSERT, which bounds the size of one statement (about 0.5 MB).
INSERT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited decision, as stored in ``audit_decisions``."""

    decision_id: str
    request_id: str
    transaction_id: str
    decided_at: datetime
    features: dict[str, float]
    features_sha256: str
    stage1_probability: float
    stage2_probability: float | None
    final_probability: float
    is_fraud: bool
    stage: str
    model_version: str
    latency_ms: float
    degraded: bool = False
    degraded_reason: str | None = None
    manual_review: bool = False

    def to_row(self, *, conflict: bool = False) -> tuple[Any, ...]:
        """Return the values of ``COLUMNS``; ``conflict`` stores it as a flagged conflict."""
        key = f"{self.transaction_id}#conflict#{self.decision_id}" if conflict \
            else self.transaction_id
        return (
            self.decision_id, self.request_id, self.transaction_id, self.decided_at,
            self.features, self.features_sha256, self.stage1_probability,
            self.stage2_probability, self.final_probability, self.is_fraud, self.stage,
            self.model_version, self.latency_ms, self.degraded, self.degraded_reason,
            self.manual_review, key, conflict,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AuditRecord:
        """Build a record from a ``SELECT`` of ``COLUMNS`` (either dialect)."""
        values = dict(zip(COLUMNS, row, strict=True))
        features = values["features"]
        decided_at = values["decided_at"]
        return cls(
            decision_id=values["decision_id"],
            request_id=values["request_id"],
            transaction_id=values["transaction_id"],
            # SQLite stores both as text; PostgreSQL returns a datetime and a dict.
            decided_at=datetime.fromisoformat(decided_at) if isinstance(decided_at, str)
            else decided_at,
            features=json.loads(features) if isinstance(features, str) else features,
            features_sha256=values["features_sha256"],
            stage1_probability=values["stage1_probability"],
            stage2_probability=values["stage2_probability"],
            final_probability=values["final_probability"],
            is_fraud=bool(values["is_fraud"]),
            stage=values["stage"],
            model_version=values["model_version"],
            latency_ms=values["latency_ms"],
            degraded=bool(values["degraded"]),
            degraded_reason=values["degraded_reason"],
            manual_review=bool(values["manual_review"]),
        )

    def to_json(self) -> str:
        """Serialize for the fallback spool or queue (ISO-8601 time)."""
        row = asdict(self)
        row["decided_at"] = self.decided_at.isoformat()
        return json.dumps(row, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, raw: str) -> AuditRecord:
        row = json.loads(raw)
        row["decided_at"] = datetime.fromisoformat(row["decided_at"])
        return cls(**row)


class AuditStore:
    """Writes audit records through one :class:`~fraudscore.database.Database` per process.

    In Lambda, one pooled connection per container is reused across invocations.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    def write(
        self, records: Sequence[AuditRecord], *, keep_conflicts: bool = False
    ) -> dict[str, AuditRecord]:
        """Insert ``records`` in one transaction and return the repeats it found.

        Parameters
        ----------
        records : sequence of AuditRecord
            Decisions to record.
        keep_conflicts : bool
            False (serving): a transaction id already stored with other features raises
            IdempotencyConflictError and nothing is written. True (replay): such a record
            is stored as a flagged conflict instead, so no returned decision is lost.

        Returns
        -------
        dict of str to AuditRecord
            For each record whose transaction id was already stored with the same
            features, its ``decision_id`` mapped to the stored record.

        Raises
        ------
        AuditError
            If the database rejects the statement or cannot be reached.
        IdempotencyConflictError
            See ``keep_conflicts``.
        """
        if not records:
            return {}
        return self._with_connection(
            records, lambda connection: self._write_on(connection, records, keep_conflicts))

    def write_each(
        self, records: Sequence[AuditRecord]
    ) -> list[dict[str, AuditRecord] | IdempotencyConflictError]:
        """Insert independent single-decision records with one statement; return each outcome.

        The result equals calling ``write([record])`` for each record in turn, in one
        round trip instead of one per record. A new record gets ``{}``. A record whose
        transaction id is stored with the same features gets ``{decision_id: stored
        record}``. One stored with other features gets an IdempotencyConflictError, and
        nothing is written for it. The records may come from different requests, and a
        conflict of one record does not affect the others.

        Raises
        ------
        AuditError
            If the database rejects the statement or cannot be reached; then none of the
            records was written.
        """
        if not records:
            return []
        return self._with_connection(
            records, lambda connection: self._write_each_on(connection, records))

    def _with_connection[T](
        self, records: Sequence[AuditRecord], work: Callable[[Connection], T]
    ) -> T:
        """Run ``work`` on a pooled connection; retry once on a lost reused connection."""
        for attempt in (1, 2):
            reused = False
            try:
                with self.database.connection() as (connection, reused):
                    return work(connection)
            except DatabaseError as exc:
                if attempt == 1 and exc.connection_lost and reused:
                    # The pooled connection had died (database restart, idle timeout) and
                    # was closed, so one retry gets a fresh connection. This saves the
                    # round trip of a liveness check on every request.
                    logger.warning("audit connection was closed by the server; retrying once")
                    continue
                ids = ", ".join(record.decision_id for record in records[:3])
                raise AuditError(
                    f"audit insert of {len(records)} record(s) failed (decision ids {ids}"
                    f"{', ...' if len(records) > 3 else ''}): {exc}"
                ) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _write_on(
        self, connection: Connection, records: Sequence[AuditRecord], keep_conflicts: bool
    ) -> dict[str, AuditRecord]:
        if len(records) == 1:
            # One statement is atomic on its own; a conflict means nothing was written.
            return self._write_rows(connection, records, keep_conflicts)
        # Several rows share one transaction, so a conflict on one of them (409) writes
        # none of them.
        connection.query("BEGIN")
        try:
            repeats = self._write_rows(connection, records, keep_conflicts)
        except BaseException:
            try:
                connection.query("ROLLBACK")
            except DatabaseError as rollback_error:
                # The connection is closed on return (still inside a transaction), which
                # makes the server roll back; the original error is the one to raise.
                logger.warning("audit ROLLBACK failed: %s", rollback_error)
            raise
        connection.query("COMMIT")
        return repeats

    def _write_rows(
        self, connection: Connection, records: Sequence[AuditRecord], keep_conflicts: bool
    ) -> dict[str, AuditRecord]:
        inserted = _insert(connection, [record.to_row() for record in records])
        pending = [record for record in records if record.decision_id not in inserted]
        if not pending:
            return {}
        return self._resolve_repeats(connection, pending, keep_conflicts)

    def _resolve_repeats(
        self, connection: Connection, pending: list[AuditRecord], keep_conflicts: bool
    ) -> dict[str, AuditRecord]:
        stored = _select_by_keys(connection, sorted({r.transaction_id for r in pending}))
        repeats: dict[str, AuditRecord] = {}
        conflicts: list[AuditRecord] = []
        errors: list[IdempotencyConflictError] = []
        for record in pending:
            outcome = _compare(record, stored.get(record.transaction_id))
            if isinstance(outcome, AuditRecord):
                repeats[record.decision_id] = outcome
            elif outcome is not None:
                conflicts.append(record)
                errors.append(outcome)

        if errors and not keep_conflicts:
            raise errors[0]
        if conflicts:
            logger.error("storing %d replayed record(s) as idempotency conflicts: %s",
                         len(conflicts), ", ".join(r.decision_id for r in conflicts))
            _insert(connection, [r.to_row(conflict=True) for r in conflicts])
        return repeats

    def _write_each_on(
        self, connection: Connection, records: Sequence[AuditRecord]
    ) -> list[dict[str, AuditRecord] | IdempotencyConflictError]:
        # One autocommit statement: ON CONFLICT DO NOTHING skips each taken key on its own,
        # so one record's conflict neither fails the statement nor the other records.
        inserted = _insert(connection, [record.to_row() for record in records])
        pending = [record for record in records if record.decision_id not in inserted]
        stored = _select_by_keys(connection, sorted({r.transaction_id for r in pending})) \
            if pending else {}

        outcomes: list[dict[str, AuditRecord] | IdempotencyConflictError] = []
        for record in records:
            outcome = None if record.decision_id in inserted \
                else _compare(record, stored.get(record.transaction_id))
            if isinstance(outcome, AuditRecord):
                outcomes.append({record.decision_id: outcome})
            else:
                outcomes.append(outcome or {})
        return outcomes

    def ping(self) -> bool:
        """Return True when the audit table can be queried."""
        try:
            with self.database.connection() as (connection, _reused):
                connection.query(f"SELECT decision_id FROM {TABLE} LIMIT 1")  # noqa: S608
        except DatabaseError as exc:
            logger.warning("audit store health check failed: %s", exc)
            return False
        return True

    def count(self) -> int:
        """Return the number of audit rows (for tests and operators)."""
        with self.database.connection() as (connection, _reused):
            return int(connection.query(f"SELECT count(*) FROM {TABLE}")[0][0])  # noqa: S608

    def close(self) -> None:
        """Close the idle database connections."""
        self.database.close()


def _compare(
    record: AuditRecord, existing: AuditRecord | None
) -> AuditRecord | IdempotencyConflictError | None:
    """Classify a record that the INSERT skipped against the one stored under its key.

    Returns None when no other decision is stored under its key, because the record
    itself was stored before (a replay). Returns the stored record when it has the same
    features (a repeat), and the error to raise when it has other features (a conflict).
    """
    if existing is None or existing.decision_id == record.decision_id:
        return None
    if existing.features_sha256 == record.features_sha256:
        return existing
    return IdempotencyConflictError(
        record.transaction_id,
        f"transaction_id {record.transaction_id!r} was already scored with "
        "different features; use a new transaction_id",
        decision_id=record.decision_id,
    )


def _insert(connection: Connection, rows: list[tuple[Any, ...]]) -> set[str]:
    """Insert ``rows``, skipping conflicts; return the decision ids actually inserted."""
    inserted: set[str] = set()
    for start in range(0, len(rows), INSERT_CHUNK):
        returned = connection.insert_rows(_INSERT_HEAD, rows[start:start + INSERT_CHUNK],
                                          _INSERT_TAIL)
        inserted.update(row[0] for row in returned)
    return inserted


def _select_by_keys(connection: Connection, keys: list[str]) -> dict[str, AuditRecord]:
    """Return the stored records whose ``idempotency_key`` is in ``keys``, by key."""
    stored: dict[str, AuditRecord] = {}
    for start in range(0, len(keys), INSERT_CHUNK):
        chunk = keys[start:start + INSERT_CHUNK]
        params = {f"k{i}": key for i, key in enumerate(chunk)}
        placeholders = ", ".join(f":{name}" for name in params)
        rows = connection.query(f"{_SELECT_ALL} WHERE idempotency_key IN ({placeholders})",
                                params)
        for row in rows:
            stored[row[_KEY_INDEX]] = AuditRecord.from_row(row)
    return stored


def schema_statements(dialect: str) -> list[str]:
    """Return the statements that create the audit table and its indexes if missing."""
    type_index = 0 if dialect == "postgresql" else 1
    columns = ",\n    ".join(
        f"{name} {_COLUMN_TYPES[name][type_index]}{'' if name in _NULLABLE else ' NOT NULL'}"
        for name in COLUMNS
    )
    statements = [f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {columns}\n)"]
    statements += [f"CREATE INDEX IF NOT EXISTS {index} ON {TABLE} ({column})"
                   for index, column in _INDEXES.items()]
    return statements


def create_schema(target: Database | str) -> None:
    """Create the audit table and its indexes when they do not exist.

    ``target`` is a :class:`Database` or a database URL (``postgresql://...``,
    ``sqlite:///audit.db``). The statements run in one transaction.
    """
    database = open_database_url(target) if isinstance(target, str) else target
    try:
        with database.connection() as (connection, _reused):
            connection.query("BEGIN")
            try:
                for statement in schema_statements(database.dialect):
                    connection.query(statement)
            except BaseException:
                connection.query("ROLLBACK")
                raise
            connection.query("COMMIT")
    finally:
        if database is not target:
            database.close()
    logger.info("audit schema ready on %s", database.address.render())
