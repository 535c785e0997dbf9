"""Bad and hostile request bodies: each gets a 4xx naming the problem and writes no audit row.

422 responses have FastAPI's shape ``{"detail": [{"loc": [...], "msg": "..."}]}``, and
400, 413 and 415 responses have ``{"detail": "..."}``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fraudscore.runtime import Runtime

FEATURE = "TX_AMOUNT"
JSON_TYPE = "application/json"
DEFAULT_BODY_LIMIT = 1_048_576
SQL_INJECTION = "'; DROP TABLE audit_decisions; --"
LONG_NAME = "f" * 10_000
# Marks where a raw JSON literal (NaN, 1e400, ...) replaces a string after encoding.
RAW = "__raw_literal__"

Metadata = dict[str, Any]
ClientFactory = Callable[..., TestClient]


@dataclass(frozen=True)
class BadRequest:
    """A request that must be rejected, and the status and message it must get."""

    build: Callable[[Metadata], str | bytes]
    status: int
    expected: str
    loc: tuple[Any, ...] = ()
    content_type: str | None = JSON_TYPE


def _features(meta: Metadata) -> dict[str, Any]:
    return dict(meta["example_transaction"])


def _body(meta: Metadata, *, features: Any = None, **top: Any) -> str:
    if features is None:
        features = _features(meta)
    payload = {"transaction_id": "t-1", "features": features, **top}
    return json.dumps(payload)


def _with_raw(meta: Metadata, name: str, literal: str) -> str:
    """A valid body whose feature ``name`` is the raw JSON text ``literal``."""
    features = {**_features(meta), name: RAW}
    return _body(meta, features=features).replace(json.dumps(RAW), literal)


def _with_value(name: str, value: Any) -> Callable[[Metadata], str]:
    return lambda meta: _body(meta, features={**_features(meta), name: value})


def _raw_value(literal: str) -> Callable[[Metadata], str]:
    return lambda meta: _with_raw(meta, FEATURE, literal)


def _above_maximum(meta: Metadata) -> str:
    spec = next(item for item in meta["features"] if item["name"] == FEATURE)
    return _body(meta, features={**_features(meta), FEATURE: spec["maximum"] + 1.0})


def _without_feature(meta: Metadata) -> str:
    features = _features(meta)
    del features[FEATURE]
    return _body(meta, features=features)


def _duplicate_top_level(meta: Metadata) -> str:
    valid = json.dumps(_features(meta))
    return f'{{"features": {{}}, "features": {valid}}}'


def _duplicate_feature(meta: Metadata) -> str:
    valid = json.dumps(_features(meta))
    return f'{{"features": {valid[:-1]}, "{FEATURE}": 1.0}}}}'


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _batch(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"transactions": rows})


def _valid_rows(meta: Metadata, count: int) -> list[dict[str, Any]]:
    return [{"transaction_id": f"t-{i}", "features": _features(meta)} for i in range(count)]


def _post(client: TestClient, path: str, content: str | bytes, content_type: str | None) -> Any:
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(path, content=content, headers=headers)


PREDICT_CASES = {
    # Feature values, checked by the bundle's feature schema.
    "unknown feature": BadRequest(
        lambda meta: _body(meta, features={**_features(meta), "NOT_A_FEATURE": 1.0}),
        422, "unknown feature", ("body", "features", "NOT_A_FEATURE"),
    ),
    "missing feature": BadRequest(
        _without_feature, 422, "missing required feature", ("body", "features", FEATURE),
    ),
    "string number": BadRequest(
        _with_value(FEATURE, "1.5"), 422, "must be a number, got str",
        ("body", "features", FEATURE),
    ),
    "null value": BadRequest(
        _with_value(FEATURE, None), 422, "got null", ("body", "features", FEATURE),
    ),
    "true value": BadRequest(
        _with_value(FEATURE, True), 422, "got bool", ("body", "features", FEATURE),
    ),
    "false value": BadRequest(
        _with_value(FEATURE, False), 422, "got bool", ("body", "features", FEATURE),
    ),
    "list value": BadRequest(
        _with_value(FEATURE, [1.0]), 422, "got list", ("body", "features", FEATURE),
    ),
    "object value": BadRequest(
        _with_value(FEATURE, {"value": 1.0}), 422, "got dict", ("body", "features", FEATURE),
    ),
    "NaN literal": BadRequest(
        _raw_value("NaN"), 422, "must be finite", ("body", "features", FEATURE),
    ),
    "Infinity literal": BadRequest(
        _raw_value("Infinity"), 422, "must be finite", ("body", "features", FEATURE),
    ),
    "minus Infinity literal": BadRequest(
        _raw_value("-Infinity"), 422, "must be finite", ("body", "features", FEATURE),
    ),
    "huge exponent": BadRequest(
        _raw_value("1e400"), 422, "must be finite", ("body", "features", FEATURE),
    ),
    "400-digit integer": BadRequest(
        _raw_value("9" * 400), 422, "too large", ("body", "features", FEATURE),
    ),
    "above schema maximum": BadRequest(
        _above_maximum, 422, "must be between", ("body", "features", FEATURE),
    ),
    "negative amount": BadRequest(
        _with_value(FEATURE, -1.0), 422, "must be between", ("body", "features", FEATURE),
    ),
    "empty features": BadRequest(
        lambda meta: _body(meta, features={}), 422, "missing required feature",
        ("body", "features"),
    ),
    "features not an object": BadRequest(
        lambda meta: _body(meta, features=[1.0, 2.0]), 422, "valid dictionary",
        ("body", "features"),
    ),
    "features missing": BadRequest(
        lambda meta: json.dumps({"transaction_id": "t-1"}), 422, "Field required",
        ("body", "features"),
    ),
    "unknown top-level field": BadRequest(
        lambda meta: _body(meta, amount=1.0), 422, "Extra inputs are not permitted",
        ("body", "amount"),
    ),
    "feature name of 10k characters": BadRequest(
        lambda meta: _body(meta, features={**_features(meta), LONG_NAME: 1.0}), 422,
        # The 422 response echoes at most 128 characters of any key.
        "at most 128 characters", ("body", "features", LONG_NAME[:128] + "..."),
    ),
    "SQL in feature name": BadRequest(
        lambda meta: _body(meta, features={**_features(meta), SQL_INJECTION: 1.0}), 422,
        "unknown feature", ("body", "features", SQL_INJECTION),
    ),
    # The transaction id.
    "transaction_id of 129 characters": BadRequest(
        lambda meta: _body(meta, transaction_id="a" * 129), 422, "at most 128 characters",
        ("body", "transaction_id"),
    ),
    "transaction_id with spaces": BadRequest(
        lambda meta: _body(meta, transaction_id="tx 1"), 422, "should match pattern",
        ("body", "transaction_id"),
    ),
    "transaction_id with SQL": BadRequest(
        lambda meta: _body(meta, transaction_id=SQL_INJECTION), 422, "should match pattern",
        ("body", "transaction_id"),
    ),
    "transaction_id with trailing newline": BadRequest(
        lambda meta: _body(meta, transaction_id="tx-1\n"), 422, "should match pattern",
        ("body", "transaction_id"),
    ),
    "transaction_id empty": BadRequest(
        lambda meta: _body(meta, transaction_id=""), 422, "at least 1 character",
        ("body", "transaction_id"),
    ),
    "transaction_id a number": BadRequest(
        lambda meta: _body(meta, transaction_id=12345), 422, "valid string",
        ("body", "transaction_id"),
    ),
    # The body as a whole.
    "body a JSON array": BadRequest(lambda meta: "[]", 422, "valid dictionary", ("body",)),
    "body a JSON string": BadRequest(lambda meta: '"features"', 422, "valid dictionary", ("body",)),
    "body a JSON number": BadRequest(lambda meta: "1", 422, "valid dictionary", ("body",)),
    "empty body": BadRequest(lambda meta: "", 400, "invalid JSON"),
    "invalid JSON": BadRequest(lambda meta: '{"features": {', 400, "invalid JSON"),
    "body not UTF-8": BadRequest(
        lambda meta: _body(meta).encode("utf-16"), 400, "not UTF-8",
    ),
    "duplicate top-level key": BadRequest(_duplicate_top_level, 400, "duplicate key 'features'"),
    "duplicate feature key": BadRequest(_duplicate_feature, 400, f"duplicate key '{FEATURE}'"),
    "100k opening brackets": BadRequest(lambda meta: "[" * 100_000, 400, "invalid JSON"),
    "nested 990 levels": BadRequest(lambda meta: _nested(990), 400, "nested deeper than"),
    "nested features value": BadRequest(_raw_value(_nested(40)), 400, "nested deeper than"),
    "integer of 5000 digits": BadRequest(_raw_value("1" * 5000), 400, "too many digits"),
    "unpaired surrogate in feature name": BadRequest(
        lambda meta: '{"features": {"\\ud800": 1}}', 400, "unpaired surrogate",
    ),
    "unpaired surrogate in transaction_id": BadRequest(
        lambda meta: _body(meta, transaction_id=RAW).replace(json.dumps(RAW), '"\\udc00"'),
        400, "unpaired surrogate",
    ),
    "body over 1 MiB": BadRequest(
        lambda meta: _body(meta) + " " * DEFAULT_BODY_LIMIT, 413, f"limit is {DEFAULT_BODY_LIMIT}",
    ),
    # The content type.
    "text/plain": BadRequest(_body, 415, "must be application/json", content_type="text/plain"),
    "form encoded": BadRequest(
        lambda meta: "features=1", 415, "must be application/json",
        content_type="application/x-www-form-urlencoded",
    ),
    "no content type": BadRequest(_body, 415, "must be application/json", content_type=None),
    "JSON suffix type": BadRequest(
        _body, 415, "must be application/json", content_type="application/merge-patch+json",
    ),
    "latin-1 charset": BadRequest(
        _body, 415, "charset must be utf-8, got 'latin-1'",
        content_type="application/json; charset=latin-1",
    ),
}

BATCH_CASES = {
    "empty transactions": BadRequest(
        lambda meta: _batch([]), 422, "at least 1 item", ("body", "transactions"),
    ),
    "transactions not a list": BadRequest(
        lambda meta: json.dumps({"transactions": {"features": _features(meta)}}), 422,
        "valid list", ("body", "transactions"),
    ),
    "transactions missing": BadRequest(
        lambda meta: "{}", 422, "Field required", ("body", "transactions"),
    ),
    "bad feature in row 3": BadRequest(
        lambda meta: _batch([*_valid_rows(meta, 3), {"features": {
            **_features(meta), FEATURE: "12.0"}}]),
        422, "must be a number", ("body", "transactions", 3, "features", FEATURE),
    ),
    "unknown feature in row 3": BadRequest(
        lambda meta: _batch([*_valid_rows(meta, 3), {"features": {
            **_features(meta), "NOT_A_FEATURE": 1.0}}]),
        422, "unknown feature", ("body", "transactions", 3, "features", "NOT_A_FEATURE"),
    ),
    "bad transaction_id in row 3": BadRequest(
        lambda meta: _batch([*_valid_rows(meta, 3), {
            "transaction_id": SQL_INJECTION, "features": _features(meta)}]),
        422, "should match pattern", ("body", "transactions", 3, "transaction_id"),
    ),
    "duplicate key in row 3": BadRequest(
        lambda meta: _batch(_valid_rows(meta, 4)).replace(
            '"transaction_id": "t-3"', '"transaction_id": "t-3", "transaction_id": "t-4"'),
        400, "duplicate key 'transaction_id'",
    ),
}


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


@pytest.fixture
def metadata(client: TestClient) -> Metadata:
    meta: Metadata = client.get("/metadata").json()
    assert FEATURE in meta["example_transaction"], f"{FEATURE} is not in the bundle's schema"
    return meta


def _runtime(client: TestClient) -> Runtime:
    assert isinstance(client.app, FastAPI)
    runtime: Runtime = client.app.state.runtime
    return runtime


def _audit_count(client: TestClient) -> int:
    audit = _runtime(client).audit
    assert audit is not None
    return audit.count()


def _check_rejection(response: Any, case: BadRequest) -> None:
    """Assert the status and that the error body names the field and the problem."""
    assert response.status_code == case.status, response.text[:500]
    detail = response.json()["detail"]
    if case.status == 422:
        assert isinstance(detail, list), detail
        assert tuple(detail[0]["loc"][: len(case.loc)]) == case.loc, detail[0]["loc"]
        assert case.expected.lower() in detail[0]["msg"].lower(), detail[0]["msg"]
    else:
        assert isinstance(detail, str), detail
        assert case.expected in detail, detail


@pytest.mark.parametrize("case", PREDICT_CASES.values(), ids=PREDICT_CASES.keys())
def test_predict_rejects_bad_input(
    client: TestClient, metadata: Metadata, case: BadRequest
) -> None:
    before = _audit_count(client)

    response = _post(client, "/predict", case.build(metadata), case.content_type)

    _check_rejection(response, case)
    assert _audit_count(client) == before


@pytest.mark.parametrize("case", BATCH_CASES.values(), ids=BATCH_CASES.keys())
def test_batch_rejects_bad_input(
    client: TestClient, metadata: Metadata, case: BadRequest
) -> None:
    before = _audit_count(client)

    response = _post(client, "/predict/batch", case.build(metadata), case.content_type)

    _check_rejection(response, case)
    assert _audit_count(client) == before


def test_batch_over_limit_rejected(make_client: ClientFactory) -> None:
    client = make_client(max_batch_size=5)
    metadata = client.get("/metadata").json()
    before = _audit_count(client)

    at_limit = client.post("/predict/batch", json={"transactions": _valid_rows(metadata, 5)})
    over_limit = client.post("/predict/batch", json={"transactions": _valid_rows(metadata, 6)})

    assert at_limit.status_code == 200, at_limit.text
    assert len(at_limit.json()["decisions"]) == 5
    assert over_limit.status_code == 422, over_limit.text
    assert over_limit.json()["detail"][0]["loc"] == ["body", "transactions"]
    assert "at most 5 transactions" in over_limit.json()["detail"][0]["msg"]
    assert _audit_count(client) == before + 5


def test_small_body_limit_setting(make_client: ClientFactory) -> None:
    client = make_client(max_body_bytes=256)
    metadata = client.get("/metadata").json()
    body = _body(metadata)
    assert len(body) > 256, "the example body must exceed the configured limit"

    response = client.post("/predict", content=body, headers={"content-type": JSON_TYPE})

    assert response.status_code == 413, response.text
    assert "limit is 256" in response.json()["detail"]
    assert _audit_count(client) == 0


def test_chunked_body_over_limit(make_client: ClientFactory) -> None:
    client = make_client(max_body_bytes=256)
    metadata = client.get("/metadata").json()
    body = _body(metadata).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64):
            yield body[start:start + 64]

    # A generator body is sent without Content-Length, so only the bytes read count.
    response = client.post("/predict", content=chunks(), headers={"content-type": JSON_TYPE})

    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert "limit is 256" in response.json()["detail"]


def test_chunked_body_read_stops_at_limit(make_client: ClientFactory) -> None:
    app = make_client(max_body_bytes=1024).app
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(10_000):  # 10 MB if read whole
            pulled += 1
            yield b" " * 1024

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/predict", content=chunks(),
                                     headers={"content-type": JSON_TYPE})

    response = asyncio.run(send())

    assert response.status_code == 413, response.text
    assert "limit is 1024" in response.json()["detail"]
    assert pulled <= 3


def test_valid_request_after_bad_input(client: TestClient, metadata: Metadata) -> None:
    statuses = {}
    for name, case in PREDICT_CASES.items():
        response = _post(client, "/predict", case.build(metadata), case.content_type)
        statuses[f"predict: {name}"] = response.status_code
    for name, case in BATCH_CASES.items():
        response = _post(client, "/predict/batch", case.build(metadata), case.content_type)
        statuses[f"batch: {name}"] = response.status_code
    audited_after_bad_input = _audit_count(client)

    valid = client.post(
        "/predict", json={"transaction_id": "t-after", "features": _features(metadata)}
    )

    assert {name: status for name, status in statuses.items() if status >= 500} == {}
    assert audited_after_bad_input == 0
    assert valid.status_code == 200, valid.text
    assert valid.json()["transaction_id"] == "t-after"
    assert _audit_count(client) == 1


def test_sql_injection_leaves_audit_table(client: TestClient, metadata: Metadata) -> None:
    audit = _runtime(client).audit
    assert audit is not None
    hostile = [
        _body(metadata, transaction_id=SQL_INJECTION),
        _body(metadata, features={**_features(metadata), SQL_INJECTION: 1.0}),
        _body(metadata, features={**_features(metadata), FEATURE: SQL_INJECTION}),
    ]

    statuses = [_post(client, "/predict", body, JSON_TYPE).status_code for body in hostile]
    # "--" is allowed in ids, and a parameterized insert stores it as plain text.
    dashes = client.post(
        "/predict", json={"transaction_id": "t--1", "features": _features(metadata)}
    )

    assert statuses == [422, 422, 422]
    assert audit.ping()
    assert dashes.status_code == 200, dashes.text
    with audit.database.connection() as (connection, _reused):
        stored = connection.query("SELECT transaction_id FROM audit_decisions")
    assert stored == [("t--1",)]


@pytest.mark.parametrize("content_type", ["application/json; charset=UTF-8",
                                          'application/json; charset="utf-8"'])
def test_utf8_charset_accepted(
    client: TestClient, metadata: Metadata, content_type: str
) -> None:
    response = _post(client, "/predict", _body(metadata), content_type)

    assert response.status_code == 200, response.text


def test_compressed_body_rejected(client: TestClient, metadata: Metadata) -> None:
    before = _audit_count(client)

    response = client.post("/predict", content=gzip.compress(_body(metadata).encode()),
                           headers={"content-type": JSON_TYPE, "content-encoding": "gzip"})

    assert response.status_code == 415, response.text
    assert "content encoding 'gzip' is not supported" in response.json()["detail"]
    assert _audit_count(client) == before


def test_client_disconnect_mid_body(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The client sends part of the body and goes away, as a dropped connection does.
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"features": {', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("test", 80),
    }
    before = _audit_count(client)
    with caplog.at_level(logging.INFO, logger="fraudscore.api.strict_json"):
        asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]

    assert sent[0]["status"] == 400
    assert "client disconnected after 14 body bytes of POST /predict" in caplog.text
    assert _audit_count(client) == before


@pytest.mark.parametrize(
    "headers",
    [[("content-type", JSON_TYPE), ("content-type", "text/plain")],
     [("content-type", JSON_TYPE), ("content-encoding", "identity"),
      ("content-encoding", "gzip")]],
    ids=["content-type", "content-encoding"],
)
def test_repeated_content_header_rejected(make_client: ClientFactory,
                                          headers: list[tuple[str, str]]) -> None:
    client = make_client()
    body = _body(client.get("/metadata").json())
    before = _audit_count(client)

    response = client.post("/predict", content=body, headers=headers)

    assert response.status_code == 400, response.text
    assert "more than once" in response.json()["detail"]
    assert _audit_count(client) == before
