"""Shared fixtures: simulated history, a trained bundle, real databases, API clients."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from fraudscore.settings import Settings
from tests.ports import free_port

REFERENCE_DATA_ENV = "FRAUD_REFERENCE_DATA"
TEST_DATABASE_ENV = "TEST_DATABASE_URL"

# Every PostgreSQL URL in the tests carries this password (the local server trusts
# 127.0.0.1 and ignores it), so a test at the end of the run can search everything the
# suite logged for it.
DATABASE_PASSWORD = f"pw-{uuid.uuid4().hex}"
CAPTURED_OUTPUT: list[str] = []

# Fixtures defined in other modules of this folder.
pytest_plugins = ["tests.postgres_audit"]


class _CaptureAll(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        CAPTURED_OUTPUT.append(self.format(record))
        if record.exc_info:
            CAPTURED_OUTPUT.append(logging.Formatter().formatException(record.exc_info))


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_CaptureAll(level=logging.DEBUG))
    # Powertools' Logger adds a filter to the root logger's handlers that drops its own
    # records (to avoid printing them twice), so its logger gets a handler of its own.
    from fraudscore.observability import SERVICE_NAME

    logging.getLogger(SERVICE_NAME).addHandler(_CaptureAll(level=logging.DEBUG))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep each test's captured stdout, stderr and log, and any failure text."""
    CAPTURED_OUTPUT.extend(content for _name, content in report.sections)
    if report.failed:
        CAPTURED_OUTPUT.append(report.longreprtext)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests marked ``runs_last`` after all others."""
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


@pytest.fixture(scope="session")
def reference_data_path() -> Path:
    """The public reference data set (Fraud Detection Handbook, Le Borgne et al.)."""
    value = os.environ.get(REFERENCE_DATA_ENV)
    if not value:
        pytest.skip(
            f"{REFERENCE_DATA_ENV} is not set: point it at the Fraud Detection Handbook's "
            "simulated-data-transformed transactions (Parquet) to run this test"
        )
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"{REFERENCE_DATA_ENV}={value} does not exist")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a real PostgreSQL database for tests; skips when none is configured."""
    url = os.environ.get(TEST_DATABASE_ENV)
    if not url:
        pytest.skip(f"{TEST_DATABASE_ENV} is not set (e.g. postgresql+pg8000://postgres@127.0.0.1/test)")
    return make_url(url).set(password=DATABASE_PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards; yields its URL."""
    name = f"fraud_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(autouse=True)
def module_logs_propagate() -> None:
    """Undo ``log_modules_as_json`` before each test.

    Importing a Lambda function module sends the ``fraudscore.*`` loggers to the JSON
    handler and stops them propagating, which would hide their records from ``caplog``
    and from the root logger's capture in every later test.
    """
    from fraudscore.observability import PACKAGE_LOGGER

    package_logger = logging.getLogger(PACKAGE_LOGGER)
    package_logger.handlers = []
    package_logger.propagate = True
    package_logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def fresh_botocore_session() -> Iterator[None]:
    """Give each test its own botocore session.

    The service keeps one session per process, and a session caches credentials. A
    session made under one test's environment, or before moto was imported, must not
    serve the next test.
    """
    from fraudscore import aws_clients

    aws_clients._session = None
    yield
    aws_clients._session = None


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region, so boto3 clients under moto never find real ones."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def simulated_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small deterministic simulated history (about 70 k transactions) as Parquet."""
    from training.simulate import simulate, write_transactions

    path = tmp_path_factory.mktemp("history") / "transactions.parquet"
    frame = simulate(n_customers=600, n_terminals=1200, n_days=75, seed=7)
    write_transactions(frame, path)
    return path


@pytest.fixture(scope="session")
def bundle_dir(simulated_history: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained on the simulated history, shared by the whole session."""
    from training.pipeline import TrainConfig, train

    out = tmp_path_factory.mktemp("bundle")
    return train(TrainConfig(out_dir=out, progress=False), data_path=simulated_history)


@pytest.fixture(scope="session")
def examples(bundle_dir: Path) -> dict[str, dict[str, float]]:
    """The bundle's example transactions by kind ("uncertain", "confident_genuine", ...)."""
    return dict(json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def settings_factory(bundle_dir: Path, sqlite_url: str):  # type: ignore[no-untyped-def]
    """Build Settings for the trained bundle with a per-test SQLite audit database."""

    def make(**overrides: object) -> Settings:
        values = {"model_uri": str(bundle_dir), "database_url": sqlite_url, **overrides}
        return Settings.from_env({}, **values)

    return make


@pytest.fixture
def outage_client(settings_factory):  # type: ignore[no-untyped-def]
    """Return a factory of TestClients whose PostgreSQL is unreachable, spooling to a given path."""
    from fastapi.testclient import TestClient

    from fraudscore.api.app import create_app
    from fraudscore.runtime import Runtime

    runtimes = []

    def make(spool: Path) -> TestClient:
        runtime = Runtime.start(settings_factory(
            database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/audit",
            database_connect_timeout_seconds=0.5, audit_spool_path=str(spool),
        ))
        runtimes.append(runtime)
        return TestClient(create_app(runtime))

    yield make
    for runtime in runtimes:
        if runtime.audit is not None:
            runtime.audit.close()


@pytest.fixture
def make_client(settings_factory):  # type: ignore[no-untyped-def]
    """Start a runtime and return a FastAPI TestClient for it (audit schema created)."""
    from fastapi.testclient import TestClient

    from fraudscore.api.app import create_app
    from fraudscore.audit import create_schema
    from fraudscore.runtime import Runtime

    clients = []

    def make(runtime: Runtime | None = None, **overrides: object) -> TestClient:
        if runtime is None:
            runtime = Runtime.start(settings_factory(**overrides))
        if runtime.audit is not None:
            create_schema(runtime.audit.database)
        client = TestClient(create_app(runtime), raise_server_exceptions=False)
        clients.append((client, runtime))
        return client

    yield make
    for client, runtime in clients:
        client.close()
        if runtime.audit is not None:
            runtime.audit.close()
