"""How stage 1 reaches stage 2: in the same process, or by invoking the stage-2 Lambda.

Invoke payload (JSON), sent by :class:`LambdaStage2`::

    {"bundle_version": "<version stage 1 serves>",
     "correlation_id": "<request id>",
     "features": [[x_1, ..., x_n], ...]}        # rows in the bundle's schema order, raw

Response::

    {"bundle_version": "<version stage 2 serves>",
     "probabilities": [p, ...]}                 # calibrated, one per row

Stage 2 raises ``Stage2VersionMismatchError`` (a Lambda ``FunctionError``) when the
versions differ, so the two stages never mix models.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Protocol

import numpy as np

from fraudscore.exceptions import Stage2Error

logger = logging.getLogger(__name__)

VERSION_MISMATCH_ERROR = "Stage2VersionMismatchError"


class Stage2Client(Protocol):
    """Scores escalated rows with stage 2."""

    def score(
        self, features: np.ndarray, *, bundle_version: str, correlation_id: str
    ) -> np.ndarray:
        """Return calibrated stage-2 probabilities for rows of shape (n, n_features)."""
        ...


class InProcessStage2:
    """Stage 2 in the calling process; loads the booster once, at ``load()`` or first use."""

    def __init__(
        self, model: bytes, *, n_features: int, calibration: Any, bundle_version: str
    ) -> None:
        self._model = model
        self._n_features = n_features
        self._calibration = calibration
        self._bundle_version = bundle_version
        self._scorer: Any = None

    def score(
        self, features: np.ndarray, *, bundle_version: str, correlation_id: str
    ) -> np.ndarray:
        if bundle_version != self._bundle_version:
            raise Stage2Error(
                "version_mismatch",
                f"stage 2 serves {self._bundle_version}, request is for {bundle_version}",
            )
        scorer = self.load()
        return np.asarray(scorer.probability(features), dtype=np.float64)

    def load(self) -> Any:
        """Import xgboost and load the booster unless done; return the scorer.

        Raises
        ------
        ImportError
            If xgboost is not installed (the stage-1 Lambda package does not ship it).
        ValueError
            If the model cannot be read or expects another number of features.
        """
        if self._scorer is None:
            from fraudscore.stage2 import BoosterScorer

            self._scorer = BoosterScorer.from_bytes(
                self._model, n_features=self._n_features, calibration=self._calibration
            )
        return self._scorer


class LambdaStage2:
    """Stage 2 behind the Lambda Invoke API, called synchronously with retries disabled.

    boto3 retries a synchronous invoke that times out, which would run stage 2 several
    times for one request. The client here has ``max_attempts=1`` and explicit connect and
    read timeouts, so one escalation is at most one invocation.

    With ``create_client_at_init=False`` the botocore client is created by the first
    escalation instead of the constructor. A container whose first requests stay in
    stage 1 then serves them without importing botocore or building the client
    (about 85 ms of a cold start on the benchmark machine when no other AWS client
    exists). The escalation that creates it waits that long once.
    """

    def __init__(
        self,
        function_name: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        endpoint_url: str | None = None,
        client: Any = None,
        create_client_at_init: bool = True,
    ) -> None:
        self.function_name = function_name
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._endpoint_url = endpoint_url
        self._client = client
        self._client_lock = threading.Lock()
        if self._client is None and create_client_at_init:
            try:
                self._client = self._new_client()
            except Stage2Error:
                # Logged by _new_client. Escalations try again and, while the client
                # cannot be created, keep their stage-1 decision under the failure policy.
                pass

    @property
    def client_created(self) -> bool:
        """Whether the botocore client exists yet."""
        return self._client is not None

    @property
    def client(self) -> Any:
        """The botocore Lambda client, created on first use when not created at init.

        Raises
        ------
        Stage2Error
            With reason ``client_failed`` if botocore cannot create the client (no
            region configured, for example).
        """
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    logger.info("creating the Lambda client for %s", self.function_name)
                    self._client = self._new_client()
        return self._client

    def score(
        self, features: np.ndarray, *, bundle_version: str, correlation_id: str
    ) -> np.ndarray:
        payload = {
            "bundle_version": bundle_version,
            "correlation_id": correlation_id,
            "features": np.asarray(features, dtype=np.float64).tolist(),
        }
        started = time.perf_counter()
        response = self._invoke(payload, correlation_id)
        body = self._read_body(response, correlation_id)

        if "FunctionError" in response:
            error_type = body.get("errorType", "Unknown") if isinstance(body, dict) else "Unknown"
            message = body.get("errorMessage", "") if isinstance(body, dict) else ""
            reason = (
                "version_mismatch" if error_type == VERSION_MISMATCH_ERROR else "function_error"
            )
            raise Stage2Error(reason, f"{self.function_name} raised {error_type}: {message}"[:500])

        probabilities = _parse_probabilities(body, expected_rows=len(payload["features"]))
        if body.get("bundle_version") != bundle_version:
            raise Stage2Error(
                "version_mismatch",
                f"stage 2 responded for {body.get('bundle_version')!r}, expected {bundle_version}",
            )
        logger.debug(
            "stage 2 scored %d row(s) in %.1f ms (correlation id %s)",
            len(probabilities), (time.perf_counter() - started) * 1000, correlation_id,
        )
        return probabilities

    def _invoke(self, payload: dict[str, Any], correlation_id: str) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

        client = self.client
        try:
            return dict(
                client.invoke(
                    FunctionName=self.function_name,
                    InvocationType="RequestResponse",
                    Payload=json.dumps(payload, allow_nan=False).encode("utf-8"),
                )
            )
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise Stage2Error("timeout", f"{self.function_name}: {exc}") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            reason = "throttled" if code in {"TooManyRequestsException", "ThrottlingException"} \
                else "invoke_failed"
            raise Stage2Error(reason, f"{self.function_name}: {code}") from exc
        except (BotoCoreError, ValueError) as exc:
            raise Stage2Error("invoke_failed", f"{self.function_name}: {exc}") from exc

    def _new_client(self) -> Any:
        from botocore.exceptions import BotoCoreError

        try:
            return make_lambda_client(connect_timeout=self._connect_timeout,
                                      read_timeout=self._read_timeout,
                                      endpoint_url=self._endpoint_url)
        except (BotoCoreError, ValueError) as exc:
            # botocore raises ValueError for an endpoint URL it cannot parse.
            logger.error("Lambda client for %s could not be created: %s (check the AWS "
                         "region and STAGE2_ENDPOINT_URL)", self.function_name, exc)
            raise Stage2Error("client_failed", f"{self.function_name}: {exc}") from exc

    def _read_body(self, response: dict[str, Any], correlation_id: str) -> Any:
        raw = response["Payload"].read()
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Stage2Error("malformed_response", "stage 2 response is not JSON") from exc


def make_lambda_client(
    *, connect_timeout: float, read_timeout: float, endpoint_url: str | None = None
) -> Any:
    """Create a Lambda client with retries disabled and explicit timeouts."""
    from botocore.config import Config

    from fraudscore.aws_clients import create_client

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # total_max_attempts counts the first call; botocore's max_attempts counts retries.
        retries={"total_max_attempts": 1, "mode": "standard"},
        tcp_keepalive=True,
    )
    return create_client("lambda", endpoint_url=endpoint_url, config=config)


def _parse_probabilities(body: Any, *, expected_rows: int) -> np.ndarray:
    if not isinstance(body, dict) or not isinstance(body.get("probabilities"), list):
        raise Stage2Error("malformed_response", "stage 2 response has no 'probabilities' list")
    values = body["probabilities"]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise Stage2Error("malformed_response", "stage 2 probabilities must be JSON numbers")
    if len(values) != expected_rows:
        raise Stage2Error(
            "malformed_response",
            f"stage 2 returned {len(values)} probabilities for {expected_rows} rows",
        )
    try:
        probabilities = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise Stage2Error("malformed_response", "stage 2 probabilities are not numbers") from exc
    if not np.all(np.isfinite(probabilities)) or np.any((probabilities < 0) | (probabilities > 1)):
        raise Stage2Error("malformed_response", "stage 2 probabilities are outside [0, 1]")
    return probabilities
