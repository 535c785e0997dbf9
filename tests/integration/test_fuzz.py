"""Generated requests to /predict and /predict/batch: no input may cause a 5xx.

Hypothesis builds bodies that mix valid transactions with hostile values (NaN, infinities,
huge integers, strings, booleans, nulls, nested containers, unpaired surrogates), missing,
extra and renamed features, random transaction ids, raw JSON literals, random bytes and
random content types. Each body carries the response it must get: a body built valid gets a
200 with well-formed decisions and one audit row per decision, a body built invalid gets
a 4xx with an error body and adds no audit row.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_BATCH_SIZE = 8
MIN_REQUESTS = 1000
QUOTAS = {"predict": 450, "batch": 250, "raw": 200, "mutated": 150}
SENT: Counter[str] = Counter()
SCORED: Counter[str] = Counter()

ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
JSON_TYPE = "application/json"
CONTENT_TYPES = [
    JSON_TYPE, JSON_TYPE, JSON_TYPE, "application/json; charset=utf-8", "Application/JSON",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/problem+json", "application/jsonp", ";", "", None,
]
# Raw JSON text placed where a feature value goes. Some of it is not valid JSON at all.
LITERALS = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "0e0", "1E1", "0.5",
    "01", ".5", "1.", "+1", "0x10", "1" * 400, "1" * 5000, "[" * 40 + "]" * 40,
    '"\\ud800"', '"\\u0000"', '"1"', "true", "null", "{}", "[]", "",
]
RAW_MARK = "__raw_literal__"

SEARCH = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Spec:
    """One feature of the served schema."""

    name: str
    minimum: float
    maximum: float
    integer: bool = False


@dataclass(frozen=True)
class FuzzRequest:
    """A generated request and the response it must get.

    ``body`` is a JSON value, or bytes sent unchanged. ``valid`` is True when the body
    must be scored, False when it must be rejected, None when either is acceptable.
    """

    body: Any
    content_type: str | None = JSON_TYPE
    valid: bool | None = None
    literal: str | None = None
    ascii_only: bool = True


# ---------------------------------------------------------------------------------------
# Validity rules, written from the API contract (models.py and the /metadata schema).


def _valid_number(value: Any, spec: Spec) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    if not math.isfinite(number) or not spec.minimum <= number <= spec.maximum:
        return False
    return not spec.integer or number.is_integer()


def _valid_features(features: Any, specs: Sequence[Spec]) -> bool:
    if not isinstance(features, dict) or set(features) != {spec.name for spec in specs}:
        return False
    return all(_valid_number(features[spec.name], spec) for spec in specs)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None)


def _valid_transaction(payload: Any, specs: Sequence[Spec]) -> bool:
    if not isinstance(payload, dict) or not set(payload) <= {"transaction_id", "features"}:
        return False
    return _valid_id(payload.get("transaction_id")) and _valid_features(
        payload.get("features"), specs
    )


def _valid_content_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == JSON_TYPE


# ---------------------------------------------------------------------------------------
# Strategies.

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
valid_ids = st.from_regex(ID_PATTERN, fullmatch=True) | st.none()
transaction_ids = st.one_of(
    valid_ids,
    st.text(max_size=140),
    st.text(st.sampled_from("abc -'\";\n\\%_"), min_size=1, max_size=130),
    json_values,
)


def _in_range(spec: Spec) -> st.SearchStrategy[Any]:
    integers = st.integers(math.ceil(spec.minimum), math.floor(spec.maximum))
    floats = st.floats(spec.minimum, spec.maximum, allow_nan=False)
    if spec.integer:
        # Whole numbers, also written as floats (2.0), which JSON cannot tell apart.
        return integers | integers.map(float)
    return floats | integers


def _out_of_range(spec: Spec) -> st.SearchStrategy[float]:
    above = st.floats(min_value=spec.maximum, exclude_min=True, allow_infinity=False)
    below = st.floats(max_value=spec.minimum, exclude_max=True, allow_infinity=False)
    return above | below


def _content_types() -> st.SearchStrategy[str | None]:
    # Three of four requests are JSON, so most of them reach validation and scoring.
    return st.integers(0, 3).flatmap(
        lambda pick: st.sampled_from(CONTENT_TYPES) if pick == 0 else st.just(JSON_TYPE)
    )


@st.composite
def feature_maps(draw: st.DrawFn, specs: Sequence[Spec], hostile: bool) -> Any:
    """Valid features; when ``hostile``, some have up to three broken values and extra keys."""
    mode = draw(st.integers(0, 9)) if hostile else 0
    if mode == 9:
        return draw(json_values)
    features = {spec.name: draw(_in_range(spec)) for spec in specs}
    if mode < 5:
        return features

    broken = draw(st.lists(st.sampled_from(specs), max_size=3, unique=True))
    for spec in broken:
        action = draw(st.sampled_from(["omit", "value", "range", "rename"]))
        if action == "omit":
            del features[spec.name]
        elif action == "value":
            features[spec.name] = draw(json_values)
        elif action == "range":
            features[spec.name] = draw(_out_of_range(spec))
        else:
            renamed = draw(st.sampled_from([spec.name.lower(), f" {spec.name}", spec.name[:-1]]))
            features[renamed] = features.pop(spec.name)
    extra_names = st.text(max_size=200) | st.sampled_from([spec.name for spec in specs])
    features.update(draw(st.dictionaries(extra_names, json_values, max_size=2)))
    return features


@st.composite
def transactions(draw: st.DrawFn, specs: Sequence[Spec], hostile: bool = True) -> Any:
    """One transaction object; when ``hostile``, some have bad ids, keys or features."""
    payload: dict[str, Any] = {}
    if draw(st.booleans()):
        good_id = not hostile or draw(st.integers(0, 3)) > 0
        payload["transaction_id"] = draw(valid_ids if good_id else transaction_ids)
    if not hostile or draw(st.integers(0, 29)) > 0:
        payload["features"] = draw(feature_maps(specs, hostile))
    if hostile and draw(st.integers(0, 9)) == 0:
        key = draw(st.text(max_size=20).filter(lambda k: k not in {"transaction_id", "features"}))
        payload[key] = draw(json_values)
    return payload


@st.composite
def predict_requests(draw: st.DrawFn, specs: Sequence[Spec]) -> FuzzRequest:
    body = draw(transactions(specs)) if draw(st.integers(0, 14)) else draw(json_values)
    content_type = draw(_content_types())
    valid = _valid_transaction(body, specs) and _valid_content_type(content_type)

    literal = None
    features = body.get("features") if isinstance(body, dict) else None
    if isinstance(features, dict) and features and draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(sorted(features)))
        literal = draw(st.sampled_from(LITERALS))
        features[name] = RAW_MARK
        valid = valid and _valid_literal(literal, name, specs)
    return FuzzRequest(body, content_type, valid, literal, ascii_only=draw(st.booleans()))


def _valid_literal(literal: str, name: str, specs: Sequence[Spec]) -> bool:
    spec = next((spec for spec in specs if spec.name == name), None)
    try:
        value = json.loads(literal)
    except ValueError:
        return False
    return spec is not None and _valid_number(value, spec)


@st.composite
def batch_requests(draw: st.DrawFn, specs: Sequence[Spec]) -> FuzzRequest:
    rows = draw(st.lists(transactions(specs, hostile=draw(st.booleans())),
                         max_size=MAX_BATCH_SIZE + 2))
    body: Any = {"transactions": rows}
    if draw(st.integers(0, 19)) == 0:
        body["transactions"] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        body[draw(st.text(max_size=10).filter(lambda k: k != "transactions"))] = 1
    content_type = draw(_content_types())
    valid = (
        set(body) == {"transactions"}
        and isinstance(body["transactions"], list)
        and 1 <= len(body["transactions"]) <= MAX_BATCH_SIZE
        and all(_valid_transaction(row, specs) for row in body["transactions"])
        and _valid_content_type(content_type)
    )
    return FuzzRequest(body, content_type, valid, ascii_only=draw(st.booleans()))


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        if action == "delete":
            raw = raw[:position] + raw[position + data.draw(st.integers(1, 8)):]
        elif action == "insert":
            raw = raw[:position] + data.draw(st.binary(min_size=1, max_size=8)) + raw[position:]
        elif action == "replace":
            raw = raw[:position] + data.draw(st.binary(min_size=1, max_size=1)) + raw[position + 1:]
        else:
            raw = raw[:position]
    return raw


# ---------------------------------------------------------------------------------------
# Sending and checking.


class Target:
    """The API under test, the served schema, and the checks applied to every response."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        metadata = client.get("/metadata").json()
        self.specs = [Spec(f["name"], f["minimum"], f["maximum"], f.get("integer", False))
                      for f in metadata["features"]]
        self.threshold: float = metadata["decision_threshold"]
        self.example: dict[str, float] = metadata["example_transaction"]
        assert isinstance(client.app, FastAPI)
        self.audit = client.app.state.runtime.audit
        self._ids: Iterator[int] = itertools.count()

    def send(self, kind: str, path: str, request: FuzzRequest) -> None:
        """Send ``request`` to ``path`` and check the response against ``request.valid``."""
        content, sent_ids = self._encode(request)
        headers = {} if request.content_type is None else {"content-type": request.content_type}
        before = self.audit.count()

        response = self.client.post(path, content=content, headers=headers)
        SENT[kind] += 1

        assert response.status_code < 500, (content[:300], response.text[:300])
        if request.valid is True:
            assert response.status_code == 200, (content[:300], response.text[:300])
        if request.valid is False:
            assert 400 <= response.status_code < 500, (content[:300], response.text[:300])
        if response.status_code == 200:
            SCORED[kind] += 1
            decisions = [response.json()] if path == "/predict" else response.json()["decisions"]
            if sent_ids is not None:
                assert len(decisions) == len(sent_ids), response.text[:300]
            for i, decision in enumerate(decisions):
                _check_decision(decision, self.threshold)
                if sent_ids is not None:
                    _check_id(decision, sent_ids[i])
            assert self.audit.count() == before + len(decisions)
        else:
            _check_error(response)
            assert self.audit.count() == before

    def _encode(self, request: FuzzRequest) -> tuple[bytes, list[str | None] | None]:
        """Return the body to send and the transaction id of each row (None: unknown)."""
        if isinstance(request.body, bytes):
            return request.body, None
        body = self._unique_ids(request.body)
        text = json.dumps(body, ensure_ascii=request.ascii_only)
        if request.literal is not None:
            text = text.replace(json.dumps(RAW_MARK), request.literal, 1)
        sent_ids = [row.get("transaction_id") if isinstance(row, dict) else None
                    for row in _rows(body)]
        return text.encode("utf-8", "surrogatepass"), sent_ids

    def _unique_ids(self, body: Any) -> Any:
        """Suffix every valid transaction id with a counter.

        The audit store returns the stored decision for a repeated id, or rejects it when
        the features differ, so repeats would blur the one-row-per-decision check.
        """
        for row in _rows(body):
            if not isinstance(row, dict):
                continue
            transaction_id = row.get("transaction_id")
            if isinstance(transaction_id, str) and _valid_id(transaction_id):
                row["transaction_id"] = f"{transaction_id[:96]}-{next(self._ids)}"
        return body


def _rows(body: Any) -> list[Any]:
    """The transaction objects of a /predict or /predict/batch body (empty if not a list)."""
    if isinstance(body, dict) and "transactions" in body:
        rows = body["transactions"]
        return rows if isinstance(rows, list) else []
    return [body]


def _check_decision(decision: dict[str, Any], threshold: float) -> None:
    stage = decision["stage"]
    final = decision["fraud_probability"]
    stage1 = decision["stage1_probability"]
    stage2 = decision["stage2_probability"]

    assert stage in {"stage1", "stage2"}, decision
    assert 0.0 <= final <= 1.0, decision
    assert 0.0 <= stage1 <= 1.0, decision
    assert (stage2 is None) == (stage == "stage1"), decision
    if stage == "stage2":
        assert 0.0 <= stage2 <= 1.0, decision
        assert final == stage2, decision
    else:
        assert final == stage1, decision
    assert decision["is_fraud"] == (final >= threshold), decision


def _check_id(decision: dict[str, Any], sent_id: str | None) -> None:
    if sent_id is None:
        assert GENERATED_ID.fullmatch(decision["transaction_id"]), decision
    else:
        assert decision["transaction_id"] == sent_id, decision


def _check_error(response: Any) -> None:
    detail = response.json()["detail"]
    if response.status_code == 422:
        assert isinstance(detail, list) and detail, detail
        assert all(isinstance(item["loc"], list) and item["msg"] for item in detail), detail
    else:
        assert isinstance(detail, str) and detail, detail


def _run(quota: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    @settings(SEARCH, max_examples=quota)
    @given(strategy)
    def search(example: Any) -> None:
        check(example)

    search()


@pytest.fixture
def target(make_client: Callable[..., TestClient]) -> Target:
    return Target(make_client(max_batch_size=MAX_BATCH_SIZE))


# ---------------------------------------------------------------------------------------
# Tests.


def test_fuzz_predict(target: Target) -> None:
    _run(QUOTAS["predict"], predict_requests(target.specs),
         lambda request: target.send("predict", "/predict", request))

    assert SENT["predict"] >= QUOTAS["predict"]
    assert SCORED["predict"] >= QUOTAS["predict"] // 10, "too few generated requests were valid"


def test_fuzz_batch(target: Target) -> None:
    _run(QUOTAS["batch"], batch_requests(target.specs),
         lambda request: target.send("batch", "/predict/batch", request))

    assert SENT["batch"] >= QUOTAS["batch"]
    # A batch is valid only when every row is, so valid batches are rarer than valid rows.
    assert SCORED["batch"] >= QUOTAS["batch"] // 20, (
        f"too few generated batches were valid: {SCORED['batch']} of {SENT['batch']}")


def test_fuzz_raw_bytes(target: Target) -> None:
    bodies = st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
    requests = st.builds(FuzzRequest, bodies, st.sampled_from(CONTENT_TYPES), st.just(False))
    paths = st.sampled_from(["/predict", "/predict/batch"])

    _run(QUOTAS["raw"], st.tuples(requests, paths),
         lambda pair: target.send("raw", pair[1], pair[0]))

    assert SENT["raw"] >= QUOTAS["raw"]


def test_fuzz_mutated_valid_body(target: Target) -> None:
    # Without a transaction id, so a mutated body that is still valid is never a repeat.
    valid = json.dumps({"features": target.example}).encode()

    def check(data: st.DataObject) -> None:
        target.send("mutated", "/predict", FuzzRequest(_mutate(valid, data)))

    _run(QUOTAS["mutated"], st.data(), check)

    assert SENT["mutated"] >= QUOTAS["mutated"]


def test_fuzz_total_requests() -> None:
    if set(SENT) != set(QUOTAS):
        pytest.skip("the request total is checked only when every fuzz test of this module runs")

    assert sum(SENT.values()) >= MIN_REQUESTS
