"""Request checks that run before FastAPI parses a JSON body.

Python's ``json`` module keeps the last of two equal keys, so ``{"a": 1, "a": 2}`` would
silently become ``{"a": 2}``. Scoring money decisions on a body whose meaning depends
on the parser is unsafe, so such bodies are rejected, as are bodies over the size limit
and bodies that are not ``application/json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException


class DuplicateKeyError(ValueError):
    """A JSON object has the same key twice."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = value
    return result


def check_json_body(raw: bytes, *, max_bytes: int) -> None:
    """Raise HTTPException when ``raw`` is too large, not JSON, or has duplicate keys."""
    if len(raw) > max_bytes:
        raise HTTPException(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        json.loads(raw, object_pairs_hook=_reject_duplicates)
    except DuplicateKeyError as exc:
        raise HTTPException(400, f"invalid JSON: duplicate key {str(exc)[:128]!r}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"invalid JSON: {exc}"[:300]) from exc
    except RecursionError as exc:
        raise HTTPException(400, "invalid JSON: nested too deeply") from exc


class StrictJSONRoute(APIRoute):
    """Route class enforcing content type, body size and unique keys on JSON bodies."""

    max_body_bytes = 1_048_576

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = self.max_body_bytes

        async def strict_handler(request: Request) -> Response:
            if request.method in {"POST", "PUT", "PATCH"}:
                declared = request.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise HTTPException(
                        413, f"request body is {declared} bytes; the limit is {limit}"
                    )
                media_type = request.headers.get("content-type", "").split(";")[0].strip()
                if media_type.lower() != "application/json":
                    raise HTTPException(
                        415, f"content type must be application/json, got {media_type!r}"
                    )
                check_json_body(await request.body(), max_bytes=limit)
            return await handler(request)

        return strict_handler
