"""Create the audit table: ``python -m fraudscore.audit_schema [--database-url URL]``.

The service never creates tables while serving; run this once per database (the SAM
stack runs it as a custom resource on deploy).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from fraudscore.audit import create_schema
from fraudscore.database import open_audit_database
from fraudscore.exceptions import ConfigurationError, DatabaseError
from fraudscore.settings import Settings

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Create the audit schema in the configured database; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m fraudscore.audit_schema",
        description="Create the audit_decisions table and its indexes if they do not exist.",
    )
    parser.add_argument("--database-url",
                        help="database URL, postgresql://... or sqlite:///... "
                             "(default: $DATABASE_URL, else sqlite:///audit.db)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    overrides = {"database_url": args.database_url} if args.database_url else {}
    try:
        database = open_audit_database(Settings.from_env(**overrides))
        try:
            create_schema(database)
        finally:
            database.close()
    except (ConfigurationError, DatabaseError) as exc:
        logger.error("audit schema not created: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
