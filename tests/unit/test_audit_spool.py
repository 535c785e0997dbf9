"""The local audit spool: appends are all or nothing, and replay survives damaged lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fraudscore.audit import AuditStore, create_schema
from fraudscore.audit_fallback import SpoolFallback
from fraudscore.audit_replay import main as replay_main
from fraudscore.audit_replay import replay_spool
from fraudscore.database import open_database_url
from fraudscore.exceptions import AuditError
from tests.audit_records import make_audit_record
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(sqlite_url: str) -> Iterator[AuditStore]:
    create_schema(sqlite_url)
    store = AuditStore(open_database_url(sqlite_url))
    yield store
    store.close()


def test_spool_write_and_replay(tmp_path: Path, store: AuditStore) -> None:
    spool = SpoolFallback(tmp_path / "spool.jsonl")
    spool.write([make_audit_record("a"), make_audit_record("b")])

    assert spool.pending() == 2
    result = replay_spool(spool.path, store)

    assert result.replayed == 2
    assert result.unreadable == 0
    assert store.count() == 2
    assert spool.pending() == 0


def test_spool_torn_line_does_not_swallow_next_record(
    tmp_path: Path, store: AuditStore
) -> None:
    spool = SpoolFallback(tmp_path / "spool.jsonl")
    spool.write([make_audit_record("before")])
    torn = make_audit_record("torn").to_json()[:200]
    with spool.path.open("a") as handle:  # a process died in the middle of this line
        handle.write(torn)
    spool.write([make_audit_record("after")])

    result = replay_spool(spool.path, store)

    assert result.replayed == 2
    assert result.unreadable == 1
    assert store.count() == 2
    quarantined = spool.path.with_name("spool.jsonl.unreadable").read_text()
    assert quarantined == torn + "\n"


def test_replay_exit_code_flags_unreadable_lines(
    tmp_path: Path, sqlite_url: str, store: AuditStore
) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_text(make_audit_record("fine").to_json() + "\nnot json\n")

    code = replay_main(["--spool", str(spool), "--database-url", sqlite_url])

    assert code == 1
    assert store.count() == 1


def test_pending_counts_unfinished_replays(tmp_path: Path) -> None:
    spool = SpoolFallback(tmp_path / "spool.jsonl")
    spool.write([make_audit_record("new")])
    leftover = tmp_path / "spool.jsonl.replaying-1"
    leftover.write_text(make_audit_record("old").to_json() + "\n")

    assert spool.pending() == 2


def test_spool_partial_append_is_undone(tmp_path: Path) -> None:
    # A file size limit makes the kernel write only part of the append, as a full disk
    # does. The child process applies the limit to itself.
    path = tmp_path / "spool.jsonl"
    SpoolFallback(path).write([make_audit_record("first")])
    size = path.stat().st_size
    child = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path[:0] = {[str(ROOT), str(ROOT / "layers" / "shared")]!r}
        from fraudscore.audit_fallback import SpoolFallback
        from fraudscore.exceptions import AuditError
        from tests.audit_records import make_audit_record
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 100}, {size + 100}))
        try:
            SpoolFallback({str(path)!r}).write([make_audit_record("second")])
        except AuditError as exc:
            print("AuditError:", exc)
    """)

    completed = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                               timeout=60, check=False)

    assert completed.returncode == 0, completed.stderr
    assert "AuditError" in completed.stdout
    assert path.stat().st_size == size
    assert SpoolFallback(path).pending() == 1


def test_spool_unwritable_raises(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")

    with pytest.raises(AuditError, match="not writable"):
        SpoolFallback(blocked / "spool.jsonl").write([make_audit_record()])


def test_replay_unreachable_database_keeps_spool(tmp_path: Path) -> None:
    spool = SpoolFallback(tmp_path / "spool.jsonl")
    spool.write([make_audit_record("waiting")])
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/audit"

    code = replay_main(["--spool", str(spool.path), "--database-url", unreachable])

    assert code == 2
    assert spool.pending() == 1


def test_replay_during_writes_loses_nothing(tmp_path: Path, store: AuditStore) -> None:
    # Writer processes append while replays rename and read the spool.
    path = tmp_path / "spool.jsonl"
    writer = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {[str(ROOT), str(ROOT / "layers" / "shared")]!r}
        from fraudscore.audit_fallback import SpoolFallback
        from tests.audit_records import make_audit_record
        spool = SpoolFallback({str(path)!r})
        for i in range(300):
            spool.write([make_audit_record(f"{{sys.argv[1]}}-{{i}}")])
    """)
    writers = [subprocess.Popen([sys.executable, "-c", writer, f"w{n}"])
               for n in range(4)]

    replays = 0
    while any(process.poll() is None for process in writers):
        replay_spool(path, store)
        replays += 1
    replay_spool(path, store)

    assert [process.returncode for process in writers] == [0, 0, 0, 0]
    assert replays > 1
    assert store.count() == 1200


def test_concurrent_replays_share_the_work(tmp_path: Path, store: AuditStore) -> None:
    spool = SpoolFallback(tmp_path / "spool.jsonl")
    spool.write([make_audit_record(f"r-{i}") for i in range(2000)])

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: replay_spool(spool.path, store), range(2)))

    assert sorted(result.replayed for result in results) == [0, 2000]
    assert store.count() == 2000


def test_spool_problem_none_when_usable(tmp_path: Path) -> None:
    assert SpoolFallback(tmp_path / "spool.jsonl").problem() is None
    # Missing folders are created by the first append.
    assert SpoolFallback(tmp_path / "new" / "deeper" / "spool.jsonl").problem() is None


def test_spool_problem_names_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory_in_the_way = tmp_path / "spool.jsonl"
    directory_in_the_way.mkdir()
    blocked = tmp_path / "file"
    blocked.write_text("")

    assert "not a regular file" in str(SpoolFallback(directory_in_the_way).problem())
    assert "is not a directory" in str(SpoolFallback(blocked / "spool.jsonl").problem())

    monkeypatch.setattr("fraudscore.audit_fallback.SPOOL_MIN_FREE_BYTES", 1 << 62)
    assert "bytes free" in str(SpoolFallback(tmp_path / "other.jsonl").problem())


def test_health_unavailable_when_both_fail(outage_client, tmp_path: Path,  # type: ignore[no-untyped-def]
                                           examples: dict[str, dict[str, float]]) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.mkdir()
    client = outage_client(spool)
    runtime = client.app.state.runtime
    body = {"transaction_id": "both-down", "features": examples["confident_genuine"]}

    # Probed before any request: the database is unreachable and the spool unusable.
    before = client.get("/health")
    assert before.status_code == 503
    assert before.json()["status"] == "unavailable"
    assert "not a regular file" in before.json()["audit_fallback_error"]

    assert client.post("/predict", json=body).status_code == 503
    assert runtime.service.fallback_error is not None
    assert "Is a directory" in runtime.service.fallback_error
    assert client.get("/health").json()["status"] == "unavailable"

    # Once the spool is usable, health reports it before any request writes to it.
    spool.rmdir()
    repaired = client.get("/health")
    assert repaired.status_code == 200
    assert repaired.json()["status"] == "degraded"
    assert repaired.json()["audit_fallback_error"] is None

    assert client.post("/predict", json=body).status_code == 200
    recovered = client.get("/health").json()
    assert recovered["audit_fallback"] == "spool"
    assert recovered["audit_fallback_error"] is None
