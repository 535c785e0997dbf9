"""Local twin of the AWS topology, for machines without Docker: ``python -m fraudscore.local_twin``.

Two servers run on 127.0.0.1:

* a Lambda Invoke API endpoint (:mod:`fraudscore.local_lambda`) that runs the stage-2
  handler, ``functions/stage2/handler.py``, in a child process;
* stage 1, ``functions/stage1/app.py``, under uvicorn, with ``STAGE2_MODE=lambda`` and
  ``STAGE2_ENDPOINT_URL`` pointing at that endpoint, so escalations go through the same
  botocore Lambda client as in AWS.

AWS credentials and region get dummy values when none are set, and ``AWS_ENDPOINT_URL``
defaults to the local endpoint, so any AWS client the service creates sends its requests
to 127.0.0.1, never to AWS.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import ModuleType
from typing import Any

from fraudscore.local_lambda import (
    DEFAULT_TIMEOUT_SECONDS,
    LOCAL_HOST,
    REGION,
    serve_lambda,
)

# A fixed name: run as `python -m`, this module is named __main__ (or __mp_main__).
logger = logging.getLogger("fraudscore.local_twin")

LOG_FORMAT = "%(levelname)s %(processName)s %(name)s: %(message)s"
STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0

# The repository root, when this module runs from a checkout (layers/shared/fraudscore/).
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


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

    # Keep every AWS call on this machine: dummy credentials (so nothing is looked up
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
