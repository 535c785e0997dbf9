"""Audit trail: one row per decision in PostgreSQL (or SQLite for the local demo).

The table is created by an explicit command (``python -m fraudscore.audit_schema``),
never per request. Inserts are parameterized SQLAlchemy Core statements: one multi-row
statement per request, in one transaction.

Two keys make writes idempotent. ``decision_id`` is the primary key, so replaying a
record from the fallback spool or queue never duplicates it. ``idempotency_key`` (the
transaction id) is unique, so a client that repeats a transaction id gets the stored
decision back, or :class:`IdempotencyConflictError` when the features differ.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from fraudscore.exceptions import AuditError, IdempotencyConflictError

logger = logging.getLogger(__name__)

metadata = MetaData()

audit_decisions = Table(
    "audit_decisions",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("request_id", String(128), nullable=False),
    Column("transaction_id", String(128), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("features", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("features_sha256", String(64), nullable=False),
    Column("stage1_probability", Float, nullable=False),
    Column("stage2_probability", Float, nullable=True),
    Column("final_probability", Float, nullable=False),
    Column("is_fraud", Boolean, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("degraded", Boolean, nullable=False, server_default=text("false")),
    Column("degraded_reason", String(64), nullable=True),
    Column("manual_review", Boolean, nullable=False, server_default=text("false")),
    # Equal to transaction_id, except for a replayed record whose transaction id was taken
    # by a decision with other features while the database was down: that record is kept
    # under "<transaction_id>#conflict#<decision_id>" with idempotency_conflict set.
    Column("idempotency_key", String(256), nullable=False, unique=True),
    Column("idempotency_conflict", Boolean, nullable=False, server_default=text("false")),
    Index("ix_audit_decisions_transaction_id", "transaction_id"),
    Index("ix_audit_decisions_decided_at", "decided_at"),
)


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

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["idempotency_key"] = self.transaction_id
        return row

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


_FIELDS = tuple(AuditRecord.__dataclass_fields__)


def _conflict_row(record: AuditRecord) -> dict[str, Any]:
    row = record.to_row()
    row["idempotency_key"] = f"{record.transaction_id}#conflict#{record.decision_id}"
    row["idempotency_conflict"] = True
    return row


# Rows per multi-row INSERT: 18 columns each, so 1,000 rows use 18,000 of PostgreSQL's
# 65,535 bind parameters per statement (SQLite allows 250,000 since 3.32).
INSERT_CHUNK = 1000


def _connects_in_autocommit(engine: Engine) -> bool:
    # The isolation level given to create_engine(); SQLAlchemy keeps it on the dialect.
    return getattr(engine.dialect, "_on_connect_isolation_level", None) == "AUTOCOMMIT"


_INSERT_BY_DIALECT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class AuditStore:
    """Writes audit records through one engine, created once per process.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        A pooled engine. In Lambda, one pooled connection per container is reused
        across invocations.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name
        if dialect not in _INSERT_BY_DIALECT:
            raise AuditError(f"unsupported audit database dialect {dialect!r}")
        self._insert_function = _INSERT_BY_DIALECT[dialect]
        # Writes run in autocommit mode: a single-row INSERT is its own transaction, with
        # no BEGIN or COMMIT round trip. create_audit_engine sets it once per connection;
        # any other engine gets it per checkout, which costs a few statements each time.
        if _connects_in_autocommit(engine):
            self.engine = engine
        else:
            self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        insert: Any = self._insert_function(audit_decisions)
        self._single_insert = insert.on_conflict_do_nothing().returning(
            audit_decisions.c.decision_id
        )

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
        try:
            try:
                return self._write_once(records, keep_conflicts)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The pooled connection had died (database restart, idle timeout); the pool
                # was invalidated, so one retry gets a fresh connection. No pre-ping is
                # needed, which saves a round trip on every request.
                logger.warning("audit connection was closed by the server; retrying once")
                return self._write_once(records, keep_conflicts)
        except SQLAlchemyError as exc:
            ids = ", ".join(record.decision_id for record in records[:3])
            raise AuditError(
                f"audit insert of {len(records)} record(s) failed (decision ids {ids}"
                f"{', ...' if len(records) > 3 else ''}): {type(exc).__name__}"
            ) from exc

    def _write_once(
        self, records: Sequence[AuditRecord], keep_conflicts: bool
    ) -> dict[str, AuditRecord]:
        with self.engine.connect() as connection:
            if len(records) == 1:
                # One statement is atomic on its own; a conflict means nothing was written.
                return self._write_rows(connection, records, keep_conflicts)
            # Several rows share one transaction, so a conflict on one of them (409)
            # writes none of them.
            connection.exec_driver_sql("BEGIN")
            try:
                repeats = self._write_rows(connection, records, keep_conflicts)
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
            return repeats

    def _write_rows(
        self, connection: Connection, records: Sequence[AuditRecord], keep_conflicts: bool
    ) -> dict[str, AuditRecord]:
        inserted = self._insert_rows(connection, [r.to_row() for r in records])
        pending = [r for r in records if r.decision_id not in inserted]
        if not pending:
            return {}
        return self._resolve_repeats(connection, pending, keep_conflicts)

    def _insert_rows(self, connection: Connection, rows: list[dict[str, Any]]) -> set[str]:
        if len(rows) == 1:
            # A prebuilt statement: compiled once, then served from SQLAlchemy's cache.
            return set(connection.execute(self._single_insert, rows[0]).scalars())
        inserted: set[str] = set()
        # Multi-row VALUES statements of at most INSERT_CHUNK rows: few round trips, and
        # under PostgreSQL's limit of 65,535 parameters per statement.
        for start in range(0, len(rows), INSERT_CHUNK):
            insert: Any = self._insert_function(audit_decisions)  # dialect-specific Insert
            statement = (
                insert.values(rows[start:start + INSERT_CHUNK])
                .on_conflict_do_nothing()
                .returning(audit_decisions.c.decision_id)
            )
            inserted.update(connection.execute(statement).scalars())
        return inserted

    def _resolve_repeats(
        self, connection: Connection, pending: list[AuditRecord], keep_conflicts: bool
    ) -> dict[str, AuditRecord]:
        keys = sorted({record.transaction_id for record in pending})
        stored = {
            row.idempotency_key: AuditRecord(**{name: getattr(row, name) for name in _FIELDS})
            for row in connection.execute(
                select(audit_decisions).where(audit_decisions.c.idempotency_key.in_(keys))
            )
        }
        repeats: dict[str, AuditRecord] = {}
        conflicts: list[AuditRecord] = []
        for record in pending:
            existing = stored.get(record.transaction_id)
            if existing is None or existing.decision_id == record.decision_id:
                continue  # already stored under its own decision id: a replayed record
            if existing.features_sha256 == record.features_sha256:
                repeats[record.decision_id] = existing
            else:
                conflicts.append(record)

        if conflicts and not keep_conflicts:
            raise IdempotencyConflictError(
                conflicts[0].transaction_id,
                f"transaction_id {conflicts[0].transaction_id!r} was already scored with "
                "different features; use a new transaction_id",
            )
        if conflicts:
            logger.error("storing %d replayed record(s) as idempotency conflicts: %s",
                         len(conflicts), ", ".join(r.decision_id for r in conflicts))
            self._insert_rows(connection, [_conflict_row(r) for r in conflicts])
        return repeats

    def ping(self) -> bool:
        """Return True when the audit table can be queried."""
        try:
            with self.engine.connect() as connection:
                connection.execute(select(audit_decisions.c.decision_id).limit(1))
        except SQLAlchemyError as exc:
            logger.warning("audit store health check failed: %s", type(exc).__name__)
            return False
        return True

    def count(self) -> int:
        """Return the number of audit rows (for tests and operators)."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(audit_decisions))
                       .scalar_one())


def create_schema(engine: Engine) -> None:
    """Create the audit table and its indexes when they do not exist."""
    metadata.create_all(engine, checkfirst=True)
    logger.info("audit schema ready on %s", engine.url.render_as_string(hide_password=True))
