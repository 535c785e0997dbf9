"""Local twin of the AWS topology, for machines without Docker: ``python -m fraudscore.local_twin``.

Two servers run on 127.0.0.1:

* a Lambda Invoke API endpoint (``POST /2015-03-31/functions/{name}/invocations``) that
  runs the stage-2 handler, ``functions/stage2/handler.py``, in a child process;
* stage 1, ``functions/stage1/app.py``, under uvicorn, with ``STAGE2_MODE=lambda`` and
  ``STAGE2_ENDPOINT_URL`` pointing at that endpoint, so escalations go through the same
  boto3 Lambda client as in AWS.

The endpoint responds as the Lambda service does to synchronous (``RequestResponse``)
invocations. The handler's return value is the JSON body of a status 200 response. A
handler exception is also status 200, with the ``X-Amz-Function-Error: Unhandled``
header that botocore reports as ``FunctionError``. Service errors (unknown function,
invalid JSON, throttling) are 4xx JSON errors named by the ``x-amzn-ErrorType`` header.

AWS credentials and region get dummy values when none are set, and ``AWS_ENDPOINT_URL``
defaults to the local endpoint, so a boto3 client the service creates sends its requests
to 127.0.0.1, never to AWS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# A fixed name: run as `python -m`, this module is named __main__ (or __mp_main__).
logger = logging.getLogger("fraudscore.local_twin")

LOCAL_HOST = "127.0.0.1"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

# Stage2Function in template.yaml: Timeout 10 s, MemorySize 1769 MB.
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MEMORY_MB = 1769

# AWS quota for the request and the response payload of a synchronous invocation.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

LOG_FORMAT = "%(levelname)s %(processName)s %(name)s: %(message)s"
STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")

# The repository root, when this module runs from a checkout (layers/shared/fraudscore/).
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]

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
        Invocations allowed at once; more answer 429 ``TooManyRequestsException``.
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


def import_from_path(module_name: str, path: Path) -> ModuleType:
    """Import the Python file ``path`` as a module named ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configure_environment(
    *, model_uri: str, database_url: str | None, function_name: str, lambda_url: str
) -> None:
    """Set the environment variables both functions read, before they are imported."""
    os.environ["MODEL_URI"] = model_uri
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ["STAGE2_MODE"] = "lambda"
    os.environ["STAGE2_FUNCTION_NAME"] = function_name
    os.environ["STAGE2_ENDPOINT_URL"] = lambda_url

    # Keep every boto3 call on this machine: dummy credentials (so nothing is looked up
    # in the instance metadata service), a region, and the local endpoint for any service.
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        os.environ["AWS_ACCESS_KEY_ID"] = "local"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local"  # noqa: S105 - a placeholder
        os.environ.pop("AWS_SESSION_TOKEN", None)
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("AWS_ENDPOINT_URL", lambda_url)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fraudscore.local_twin",
        description="Serve stage 1 on 127.0.0.1 and stage 2 behind a local Lambda Invoke API.",
    )
    parser.add_argument("--port", type=int, default=3000, help="stage-1 HTTP port (default 3000)")
    parser.add_argument("--lambda-port", type=int, default=3001,
                        help="port of the Lambda Invoke API (default 3001)")
    parser.add_argument("--function-name", default="stage2",
                        help="function name stage 1 invokes (default stage2)")
    parser.add_argument("--model-uri", default=os.environ.get("MODEL_URI", "model/bundle"),
                        help="bundle directory (default: $MODEL_URI, else model/bundle)")
    parser.add_argument("--database-url",
                        help="SQLAlchemy URL of the audit database (default: $DATABASE_URL, "
                             "else sqlite:///audit.db)")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="latency added to every stage-2 invocation, in milliseconds")
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="stage-2 function timeout in seconds "
                             f"(default {DEFAULT_TIMEOUT_SECONDS:g})")
    parser.add_argument("--functions-dir", type=Path, default=REPOSITORY_ROOT / "functions",
                        help="directory with stage1/app.py and stage2/handler.py "
                             "(default: functions/ of this checkout)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage-2 endpoint and stage 1 until interrupted; return the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    stage1_path = args.functions_dir / "stage1" / "app.py"
    stage2_path = args.functions_dir / "stage2" / "handler.py"
    for path in (stage1_path, stage2_path):
        if not path.is_file():
            logger.error("%s not found: pass --functions-dir", path)
            return 2

    lambda_url = f"http://{LOCAL_HOST}:{args.lambda_port}"
    configure_environment(model_uri=args.model_uri, database_url=args.database_url,
                          function_name=args.function_name, lambda_url=lambda_url)
    options = {"timeout_seconds": args.timeout_seconds, "delay_seconds": args.delay_ms / 1000}
    # uvicorn (0.55 here) re-raises SIGINT and SIGTERM after its own shutdown. This handler
    # turns them into SystemExit, so the stage-2 process is stopped below and the exit code is 0.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _exit_on_signal)
    stage2 = _start_stage2_process(stage2_path, args.lambda_port, args.function_name, options)
    if stage2 is None:
        return 1
    try:
        # Imported here: the shared layer ships this module but not uvicorn.
        import uvicorn

        stage1 = import_from_path("local_twin_stage1", stage1_path)
        uvicorn.run(stage1.app, host=LOCAL_HOST, port=args.port, log_level="info")
    finally:
        stage2.terminate()
        stage2.join(STOP_TIMEOUT_SECONDS)
    return 0


def _exit_on_signal(signum: int, _frame: Any) -> None:
    logger.info("stopping on %s", signal.Signals(signum).name)
    raise SystemExit(0)


def _start_stage2_process(
    handler_path: Path, port: int, function_name: str, options: dict[str, Any]
) -> BaseProcess | None:
    """Start the stage-2 endpoint in its own process, or return None if it failed to start.

    Stage 2 runs in a separate process, as in AWS, so stage 1 never imports xgboost and
    the two functions share no logger state.
    """
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(
        target=_serve_stage2,
        args=(handler_path, port, function_name, options, ready, os.getpid()),
        name=f"lambda-{function_name}",
        daemon=True,
    )
    process.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not ready.wait(0.2):
        if not process.is_alive() or time.monotonic() > deadline:
            logger.error("the stage-2 endpoint on port %d did not start (exit code %s)",
                         port, process.exitcode)
            process.terminate()
            return None
    return process


def _serve_stage2(
    handler_path: Path,
    port: int,
    function_name: str,
    options: dict[str, Any],
    ready: EventType,
    parent_pid: int,
) -> None:
    """Serve the stage-2 handler until the parent process exits or the process is stopped."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    handler = import_from_path("local_twin_stage2", handler_path).handler
    server, thread = serve_lambda(handler, port=port, function_name=function_name, **options)
    ready.set()
    try:
        # Exit with the parent, so a killed twin leaves no server on the port.
        while thread.is_alive() and os.getppid() == parent_pid:
            thread.join(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
