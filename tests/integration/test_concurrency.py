"""The local server under concurrent load: no errors, one audit row per request."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from fraudscore.audit import create_schema
from tests.conftest import CAPTURED_OUTPUT
from tests.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 5000
CONCURRENCY = 32


async def _load(url: str, bodies: list[dict]) -> list[int | str]:
    """Send ``bodies`` concurrently; return each status code, or the client error's name."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def send(body: dict) -> int | str:
            async with semaphore:
                try:
                    response = await client.post("/predict", json=body)
                except httpx.HTTPError as exc:
                    return f"{type(exc).__name__}: {exc}"
                return response.status_code

        return await asyncio.gather(*(send(body) for body in bodies))


def test_server_under_load_audits_every_request(
    bundle_dir: Path, postgres_database_url: str, tmp_path: Path
) -> None:
    create_schema(postgres_database_url)
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "MODEL_URI": str(bundle_dir), "DATABASE_URL": postgres_database_url,
           "AUDIT_SPOOL_PATH": str(tmp_path / "spool.jsonl"), "POWERTOOLS_LOG_LEVEL": "WARNING"}
    # uvicorn closes a keep-alive connection after 5 idle seconds by default. On a busy
    # machine the client can send on such a connection just as it closes and get a
    # ReadError, which is no fault of the service, so idle connections stay open longer.
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "functions.stage1.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--timeout-keep-alive", "60"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]
        kinds = ["confident_genuine", "uncertain"]
        bodies = [{"transaction_id": f"load-{i}", "features": examples[kinds[i % 2]]}
                  for i in range(REQUESTS)]

        started = time.perf_counter()
        statuses = asyncio.run(_load(url, bodies))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
        CAPTURED_OUTPUT.append(log.read_text())

    errors = Counter(status for status in statuses if status != 200)
    print(f"{REQUESTS} requests at concurrency {CONCURRENCY}: {elapsed:.1f} s, "
          f"{REQUESTS / elapsed:.0f} requests/s")
    server_log = [line for line in log.read_text().splitlines()
                  if "ERROR" in line or "WARNING" in line]
    assert errors == Counter(), f"{errors.most_common(5)}; server log: {server_log[-10:]}"
    engine = create_engine(postgres_database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT count(DISTINCT transaction_id), count(*) "
                                       "FROM audit_decisions")).one()
    engine.dispose()
    assert tuple(rows) == (REQUESTS, REQUESTS)
    assert not (tmp_path / "spool.jsonl").exists()
