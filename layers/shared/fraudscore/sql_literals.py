"""Client-side parameter binding for PostgreSQL's simple query protocol.

pg8000 sends a parameterized statement as Parse, Describe and Bind/Execute, three round
trips. Rendering the parameters as SQL literals and sending one Query message takes one
round trip and leaves no prepared statement on the server, which would pin the session
behind RDS Proxy. This is how psycopg2 binds parameters too.

Only the value types the audit trail stores are accepted. Strings are quoted by
doubling single quotes, which is safe only with ``standard_conforming_strings`` on (the
PostgreSQL default since 9.1); :func:`check_server_quoting` verifies that per connection.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from fraudscore.exceptions import DatabaseError

_PLACEHOLDER = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


def render_literal(value: Any) -> str:
    """Render ``value`` as a PostgreSQL literal.

    Raises
    ------
    TypeError
        For a type without a rendering here.
    ValueError
        For a non-finite float (also inside a dict, which becomes ``jsonb``), a naive
        datetime or a string containing NUL.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot store the non-finite float {value!r}")
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("PostgreSQL text cannot contain the NUL character")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, allow_nan=False)
        return f"CAST({render_literal(text)} AS jsonb)"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"timestamps must carry a time zone, got {value.isoformat()}")
        return f"CAST('{value.isoformat()}' AS timestamptz)"
    raise TypeError(f"no SQL literal for values of type {type(value).__name__}")


def render_statement(template: str, params: Mapping[str, Any]) -> str:
    """Replace each ``:name`` in ``template`` by the literal of ``params[name]``.

    ``template`` must be a constant of this package: a colon inside a quoted string or a
    ``::`` cast in it would be taken for a placeholder.
    """
    def substitute(match: re.Match[str]) -> str:
        return render_literal(params[match.group(1)])

    return _PLACEHOLDER.sub(substitute, template)


def render_row(values: Sequence[Any]) -> str:
    """Render one ``VALUES`` row: ``(literal, literal, ...)``."""
    return "(" + ", ".join(render_literal(value) for value in values) + ")"


def check_server_quoting(parameter_statuses: Mapping[str, str]) -> None:
    """Raise DatabaseError unless the server reported ``standard_conforming_strings=on``.

    With it off, a backslash in a string literal starts an escape sequence, and doubled
    quotes alone would not make a string safe.
    """
    value = parameter_statuses.get("standard_conforming_strings")
    if value != "on":
        raise DatabaseError(
            f"the database server reports standard_conforming_strings={value!r}; "
            "the audit store needs it on (the PostgreSQL default)"
        )
