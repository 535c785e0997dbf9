"""A database that accepts connections but never responds blocks only the audited requests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraudscore.api.app import create_app
from fraudscore.runtime import Runtime

TIMEOUT_SECONDS = 2.0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


async def _scenario(app: Any, features: dict[str, float]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        started = time.perf_counter()
        scoring = asyncio.create_task(client.post("/predict", json={"features": features}))
        await asyncio.sleep(0.2)  # the audit write is now waiting on the silent server

        metadata = await client.get("/metadata")
        metadata_seconds = time.perf_counter() - started
        assert not scoring.done()

        decision = await scoring
        return {"metadata": metadata, "metadata_seconds": metadata_seconds,
                "decision": decision, "decision_seconds": time.perf_counter() - started}


def test_hung_database_blocks_only_audited_requests(
    settings_factory: Any, examples: dict[str, dict[str, float]], silent_server: int,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.jsonl"
    runtime = Runtime.start(settings_factory(
        database_url=f"postgresql://postgres@127.0.0.1:{silent_server}/audit",
        database_connect_timeout_seconds=TIMEOUT_SECONDS, audit_spool_path=str(spool)))

    outcome = asyncio.run(_scenario(create_app(runtime), examples["confident_genuine"]))

    assert outcome["metadata"].status_code == 200
    assert outcome["metadata_seconds"] < TIMEOUT_SECONDS / 2
    # The audit write timed out, so the decision went to the spool and was returned.
    assert outcome["decision"].status_code == 200
    assert outcome["decision_seconds"] >= TIMEOUT_SECONDS
    assert len(spool.read_text().splitlines()) == 1
