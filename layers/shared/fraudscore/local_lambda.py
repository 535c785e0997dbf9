"""A local Lambda Invoke API endpoint on 127.0.0.1, for machines without Docker.

``POST /2015-03-31/functions/{name}/invocations`` runs a Python handler and responds as
the Lambda service does to synchronous (``RequestResponse``) invocations. The handler's
return value is the JSON body of a status 200 response. A handler exception is also
status 200, with the ``X-Amz-Function-Error: Unhandled`` header that botocore reports as
``FunctionError``. Service errors (unknown function, invalid JSON, throttling) are 4xx
JSON errors named by the ``x-amzn-ErrorType`` header.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

# Stage2Function in template.yaml: Timeout 10 s, MemorySize 1769 MB.
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MEMORY_MB = 1769

# AWS quota for the request and the response payload of a synchronous invocation.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")

Handler = Callable[[Any, Any], Any]


@dataclass
class LocalLambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    timeout_seconds: float
    memory_limit_in_mb: int = DEFAULT_MEMORY_MB
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local-twin"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function timeout."""
        elapsed = time.monotonic() - self.started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None
    finished: bool = False


class LambdaInvokeServer(ThreadingHTTPServer):
    """An HTTP server that serves one handler behind the Lambda Invoke API.

    Parameters
    ----------
    address : tuple of (str, int)
        Host and port to bind; port 0 picks a free port.
    handler : callable
        ``handler(event, context)``, as the Lambda runtime calls it.
    function_name : str
        The only function name served. Other names get a 404 ``ResourceNotFoundException``.
    timeout_seconds : float
        Function timeout. A longer invocation returns a ``Sandbox.Timedout`` function error.
    memory_limit_in_mb : int
        Reported by the context object only; memory is not limited.
    reserved_concurrency : int or None
        Invocations allowed at once; more get 429 ``TooManyRequestsException``.
        0 throttles every request, as reserved concurrency 0 does in AWS.
    delay_seconds : float
        Sleep before each handler call, counted in the function's duration.

    Attributes
    ----------
    requests : int
        Invoke requests received for the served function, throttled ones included.
    invocations : int
        Handler calls started.
    """

    daemon_threads = True
    # socketserver's default backlog of 5 made concurrent connects beyond it wait for a
    # SYN retry (1 s), longer than stage 1's connect timeout.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        *,
        function_name: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        memory_limit_in_mb: int = DEFAULT_MEMORY_MB,
        reserved_concurrency: int | None = None,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(address, _InvokeRequestHandler)
        self.handler = handler
        self.function_name = function_name
        self.timeout_seconds = timeout_seconds
        self.memory_limit_in_mb = memory_limit_in_mb
        self.reserved_concurrency = reserved_concurrency
        self.delay_seconds = delay_seconds
        self.requests = 0
        self.invocations = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving and close the socket, without waiting for running handler calls."""
        self.shutdown()
        self.server_close()

    def acquire(self) -> bool:
        """Count a request and return False when it must be throttled."""
        with self._lock:
            self.requests += 1
            limit = self.reserved_concurrency
            if limit is not None and self._in_flight >= limit:
                return False
            self._in_flight += 1
            self.invocations += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def run_handler(self, event: Any, context: LocalLambdaContext) -> _Outcome:
        """Call the handler in a worker thread and wait at most the function timeout.

        A timed-out worker keeps running in the background, because Python cannot stop a
        thread; Lambda would stop the execution environment instead.
        """
        outcome = _Outcome()

        def invoke() -> None:
            try:
                if self.delay_seconds:
                    time.sleep(self.delay_seconds)
                outcome.result = self.handler(event, context)
            except Exception as exc:  # every handler error becomes a function error
                outcome.error = exc
            finally:
                outcome.finished = True

        worker = threading.Thread(target=invoke, name=f"invoke-{context.aws_request_id}",
                                  daemon=True)
        worker.start()
        worker.join(self.timeout_seconds)
        return outcome


class _InvokeRequestHandler(BaseHTTPRequestHandler):
    server: LambdaInvokeServer
    # HTTP/1.1 keeps botocore's pooled connections open, so every response needs a
    # Content-Length header.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        match = INVOKE_PATH.match(url.path)
        if match is None:
            if self._read_body() is not None:
                self._send_error(HTTPStatus.NOT_FOUND, "UnknownOperationException",
                                 f"no Lambda API operation at {url.path}")
            return
        name, qualifier = _split_function_name(unquote(match["name"]))
        qualifier = qualifier or parse_qs(url.query).get("Qualifier", [None])[0]
        body = self._read_body()
        if body is None:
            return
        if name != self.server.function_name:
            self._send_error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException",
                             f"Function not found: {_function_arn(name, qualifier)}")
            return

        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type not in {"RequestResponse", "DryRun"}:
            self._send_error(HTTPStatus.BAD_REQUEST, "InvalidParameterValueException",
                             f"the local twin supports the invocation types RequestResponse "
                             f"and DryRun, got {invocation_type!r}")
            return
        try:
            event = json.loads(body) if body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send_error(HTTPStatus.BAD_REQUEST, "InvalidRequestContentException",
                             f"Could not parse request body into json: {exc}")
            return
        if invocation_type == "DryRun":
            self._send(HTTPStatus.NO_CONTENT, b"")
            return
        self._invoke(event)

    def _invoke(self, event: Any) -> None:
        server = self.server
        if not server.acquire():
            self._send_error(HTTPStatus.TOO_MANY_REQUESTS, "TooManyRequestsException",
                             "Rate Exceeded.",
                             Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
            return

        context = LocalLambdaContext(
            function_name=server.function_name,
            aws_request_id=str(uuid.uuid4()),
            timeout_seconds=server.timeout_seconds,
            memory_limit_in_mb=server.memory_limit_in_mb,
        )
        try:
            outcome = server.run_handler(event, context)
        finally:
            server.release()
        payload, error_type = _encode_outcome(outcome, context)
        elapsed_ms = (time.monotonic() - context.started) * 1000
        logger.info("%s request %s: %s in %.1f ms", server.function_name, context.aws_request_id,
                    error_type or "ok", elapsed_ms)

        headers = {"X-Amz-Executed-Version": "$LATEST", "X-Amzn-RequestId": context.aws_request_id}
        if error_type is not None:
            headers["X-Amz-Function-Error"] = "Unhandled"
        self._send(HTTPStatus.OK, payload, headers)

    def _read_body(self) -> bytes | None:
        raw_length = self.headers.get("Content-Length") or "0"
        if not raw_length.isdigit():
            self.close_connection = True
            self._send_error(HTTPStatus.BAD_REQUEST, "InvalidRequestContentException",
                             f"invalid Content-Length header: {raw_length!r}")
            return None
        length = int(raw_length)
        if length > MAX_PAYLOAD_BYTES:
            self.close_connection = True
            self._send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "RequestTooLargeException",
                             f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the "
                             f"InvokeFunction operation, got {length}")
            return None
        return self.rfile.read(length)

    def _send_error(self, status: HTTPStatus, code: str, message: str, **fields: str) -> None:
        body = json.dumps({"Type": "User", "message": message, **fields}).encode("utf-8")
        headers = {"x-amzn-ErrorType": code, "X-Amzn-RequestId": str(uuid.uuid4())}
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            headers["Retry-After"] = "1"
        logger.warning("invoke rejected with %s: %s", code, message)
        self._send(status, body, headers)

    def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client closed the connection first, for example at its read timeout.
            logger.info("client closed the connection before the response was sent")
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def _encode_outcome(outcome: _Outcome, context: LocalLambdaContext) -> tuple[bytes, str | None]:
    """Return the body Lambda sends with status 200, and the error type of a function error."""
    request_id = context.aws_request_id
    if not outcome.finished:
        message = (f"RequestId: {request_id} Error: Task timed out after "
                   f"{context.timeout_seconds:.2f} seconds")
        return _function_error("Sandbox.Timedout", message, request_id)
    if outcome.error is not None:
        logger.error("%s request %s raised %s", context.function_name, request_id,
                     type(outcome.error).__name__, exc_info=outcome.error)
        return _function_error(type(outcome.error).__name__, str(outcome.error), request_id)
    try:
        payload = json.dumps(outcome.result).encode("utf-8")
    except (TypeError, ValueError) as exc:
        return _function_error("Runtime.MarshalError", f"Unable to marshal response: {exc}",
                               request_id)
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _function_error(
            "Function.ResponseSizeTooLarge",
            f"Response payload size ({len(payload)} bytes) exceeded maximum allowed payload "
            f"size ({MAX_PAYLOAD_BYTES} bytes).",
            request_id,
        )
    return payload, None


def _function_error(error_type: str, message: str, request_id: str) -> tuple[bytes, str]:
    # The twin logs the stack trace, and the caller gets an empty list.
    body = {"errorMessage": message, "errorType": error_type, "requestId": request_id,
            "stackTrace": []}
    return json.dumps(body).encode("utf-8"), error_type


def _split_function_name(value: str) -> tuple[str, str | None]:
    """Split a function name, ``name:qualifier`` or function ARN into name and qualifier.

    Every qualifier (version or alias) resolves to the one handler the twin serves.
    """
    parts = value.split(":")
    if value.startswith("arn:") and len(parts) >= 7:
        return parts[6], parts[7] if len(parts) > 7 else None
    if len(parts) == 2:
        return parts[0], parts[1]
    return value, None


def _function_arn(name: str, qualifier: str | None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def serve_lambda(
    handler: Handler,
    *,
    host: str = LOCAL_HOST,
    port: int = 0,
    function_name: str = "stage2",
    **options: Any,
) -> tuple[LambdaInvokeServer, threading.Thread]:
    """Serve ``handler`` behind the Lambda Invoke API in a background thread.

    Parameters
    ----------
    handler : callable
        ``handler(event, context)``.
    host, port : str, int
        Address to bind; port 0 picks a free port (read it from ``server.endpoint_url``).
    function_name : str
        Name the handler is invoked by.
    **options
        Further keyword arguments of :class:`LambdaInvokeServer` (``timeout_seconds``,
        ``reserved_concurrency``, ``delay_seconds``, ``memory_limit_in_mb``).

    Returns
    -------
    server, thread
        Stop with ``server.stop()``, then ``thread.join()``.
    """
    server = LambdaInvokeServer((host, port), handler, function_name=function_name, **options)
    thread = threading.Thread(target=server.serve_forever, name=f"lambda-{function_name}",
                              daemon=True)
    thread.start()
    logger.info("Lambda Invoke API for function %r on %s", function_name, server.endpoint_url)
    return server, thread
