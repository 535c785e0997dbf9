"""Audit trail: one row per decision in PostgreSQL (or SQLite for the local demo).

The table is created by an explicit command (``python -m fraudscore.audit_schema``),
never per request. Inserts are parameterized SQLAlchemy Core statements: one round trip
per decision, one multi-row statement per batch. ``decision_id`` is the primary key and
inserts skip rows whose id already exists, so writing the same record twice (a replay of
the fallback queue, a retried request) never creates a duplicate.
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
from sqlalchemy.exc import SQLAlchemyError

from fraudscore.exceptions import AuditError

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
        return asdict(self)

    def to_json(self) -> str:
        """Serialize for the fallback spool or queue (ISO-8601 time)."""
        row = self.to_row()
        row["decided_at"] = self.decided_at.isoformat()
        return json.dumps(row, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, raw: str) -> AuditRecord:
        row = json.loads(raw)
        row["decided_at"] = datetime.fromisoformat(row["decided_at"])
        return cls(**row)


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
        self.engine = engine
        dialect = engine.dialect.name
        if dialect not in _INSERT_BY_DIALECT:
            raise AuditError(f"unsupported audit database dialect {dialect!r}")
        self._insert_function = _INSERT_BY_DIALECT[dialect]

    def write(self, records: Sequence[AuditRecord]) -> None:
        """Insert ``records`` in one statement; existing decision ids are skipped.

        Raises
        ------
        AuditError
            If the database rejects the statement or cannot be reached.
        """
        if not records:
            return
        # One multi-row VALUES statement, so a batch costs one round trip.
        statement = (
            self._insert_function(audit_decisions)
            .values([record.to_row() for record in records])
            .on_conflict_do_nothing(index_elements=["decision_id"])
        )
        try:
            with self.engine.begin() as connection:
                connection.execute(statement)
        except SQLAlchemyError as exc:
            ids = ", ".join(record.decision_id for record in records[:3])
            raise AuditError(
                f"audit insert of {len(records)} record(s) failed (decision ids {ids}"
                f"{', ...' if len(records) > 3 else ''}): {type(exc).__name__}"
            ) from exc

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
