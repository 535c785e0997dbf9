"""Request checks that run before FastAPI parses a JSON body.

Python's ``json`` module keeps the last of two equal keys, so ``{"a": 1, "a": 2}`` would
silently become ``{"a": 2}``. Scoring money decisions on a body whose meaning depends
on the parser is unsafe, so such bodies are rejected, as are bodies over the size limit
and bodies that are not ``application/json``.

Bodies must also be uncompressed UTF-8 (RFC 8259, section 8.1): a ``charset`` other than
UTF-8 or a ``Content-Encoding`` other than ``identity`` gets 415. They nest at most
``MAX_JSON_DEPTH`` levels and contain no unpaired surrogate escape such as ``"\\ud800"``.
FastAPI echoes invalid input in its 422 responses, and echoing deeply nested values or
strings that cannot be encoded as UTF-8 would otherwise fail with a 500.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)

# Valid bodies nest 4 levels ({"transactions": [{"features": {...}}]}).
MAX_JSON_DEPTH = 32

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class DuplicateKeyError(ValueError):
    """A JSON object has the same key twice."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = value
    return result


def _check_depth(value: Any) -> None:
    """Raise HTTPException when ``value`` nests deeper than ``MAX_JSON_DEPTH`` levels."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            raise HTTPException(400, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        children: list[Any] = []
        for item in level:
            members = item.values() if isinstance(item, dict) else item
            children.extend(child for child in members if isinstance(child, dict | list))
        level = children
        depth += 1


def _check_surrogates(text: str, value: Any) -> None:
    """Raise HTTPException when a string of ``value`` contains an unpaired surrogate."""
    # Valid UTF-8 cannot encode surrogates, so they can only come from \uD800-\uDFFF escapes.
    if not _SURROGATE_ESCAPE.search(text):
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPException(
            400, "invalid JSON: a string contains an unpaired surrogate escape"
        ) from exc


def check_json_body(raw: bytes, *, max_bytes: int) -> None:
    """Raise HTTPException when ``raw`` is too large, not UTF-8 JSON, or has duplicate keys.

    Also rejects bodies nested deeper than ``MAX_JSON_DEPTH`` levels, unpaired
    surrogate escapes, and integers longer than Python's digit limit (4300 by default).
    """
    if len(raw) > max_bytes:
        raise HTTPException(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        # A leading byte order mark is dropped, as json.loads drops it when Starlette parses bytes.
        text = raw.decode("utf-8-sig")
        parsed = json.loads(text, object_pairs_hook=_reject_duplicates)
    except DuplicateKeyError as exc:
        raise HTTPException(400, f"invalid JSON: duplicate key {str(exc)[:128]!r}") from exc
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"invalid JSON: body is not UTF-8: {exc}"[:300]) from exc
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"invalid JSON: {exc}"[:300]) from exc
    except RecursionError as exc:
        raise HTTPException(400, "invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        # int() raises this for integers over sys.get_int_max_str_digits() digits.
        raise HTTPException(400, "invalid JSON: an integer has too many digits") from exc
    _check_depth(parsed)
    _check_surrogates(text, parsed)


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
                _check_content_headers(request)
                check_json_body(await _read_body(request, limit), max_bytes=limit)
            return await handler(request)

        return strict_handler


def _check_content_headers(request: Request) -> None:
    """Raise 415 unless the body is declared as uncompressed UTF-8 ``application/json``.

    Raise 400 when the request repeats one of these headers, because its values might
    disagree.
    """
    for header in ("content-type", "content-encoding"):
        if len(request.headers.getlist(header)) > 1:
            raise HTTPException(400, f"the {header} header is given more than once")
    media_type, *parameters = request.headers.get("content-type", "").split(";")
    media_type = media_type.strip()
    if media_type.lower() != "application/json":
        raise HTTPException(415, f"content type must be application/json, got {media_type!r}")

    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"')
        if name.strip().lower() == "charset" and charset.lower() not in {"utf-8", "utf8"}:
            raise HTTPException(415, f"charset must be utf-8, got {charset!r}")

    encoding = request.headers.get("content-encoding", "").strip()
    if encoding.lower() not in {"", "identity"}:
        raise HTTPException(
            415, f"content encoding {encoding!r} is not supported; send the body uncompressed"
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, raising 413 as soon as it exceeds ``limit`` bytes.

    A chunked body has no Content-Length to check first, and ``request.body()`` would
    read it whole before any check. The body is kept on the request, where Starlette's
    ``Request.body()`` looks for it, so FastAPI parses the same bytes.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    413, f"request body is more than {limit} bytes; the limit is {limit}"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        # The client is gone, so the 400 is never read. It ends the request without a
        # traceback in the server log.
        logger.info("client disconnected after %d body bytes of %s %s",
                    size, request.method, request.url.path)
        raise HTTPException(400, "client disconnected before the body was complete") from None
    body = b"".join(chunks)
    request._body = body
    return body
