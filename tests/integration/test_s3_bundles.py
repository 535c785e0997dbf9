"""Model bundles on S3, with moto: publishing, the ACTIVE.json pointer, integrity, serving."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from fraudscore.bundle import MANIFEST_NAME, Bundle, load_bundle, manifest_digest
from fraudscore.exceptions import BundleError, BundleIntegrityError
from fraudscore.runtime import Runtime
from fraudscore.settings import Settings
from fraudscore.stage2_service import Stage2Service
from fraudscore.storage import ACTIVE_POINTER_NAME, DirectoryStore, open_store
from training.cli import main as training_cli
from training.publish import publish_bundle

REGION = "us-east-1"
BUCKET = "fraud-bundles"
PREFIX = "bundles"
ROOT = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture
def s3(aws_credentials: None) -> Iterator[Any]:
    """An S3 client on moto's in-process S3, with the bundle bucket created."""
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="session")
def local_bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(DirectoryStore(bundle_dir))


@pytest.fixture
def second_bundle_dir(bundle_dir: Path, tmp_path: Path) -> Path:
    """A copy of ``bundle_dir`` with a new bundle version and a manifest digest to match."""
    target = tmp_path / "second-bundle"
    shutil.copytree(bundle_dir, target)
    manifest_path = target / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["bundle_version"] = f"{manifest['bundle_version']}-second"
    manifest["manifest_sha256"] = manifest_digest(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


class S3CallCounter:
    """Recorder of one client's S3 API calls, through botocore's ``before-call`` event."""

    def __init__(self, client: Any) -> None:
        self.operations: list[str] = []
        client.meta.events.register("before-call.s3.*", self._record)

    def _record(self, model: Any, **_kwargs: Any) -> None:
        self.operations.append(model.name)


class FailingPutClient:
    """S3 client wrapper whose ``put_object`` fails for keys that end with ``fail_suffix``."""

    def __init__(self, client: Any, fail_suffix: str) -> None:
        self._client = client
        self._fail_suffix = fail_suffix

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(self._fail_suffix):
            error = {"Error": {"Code": "InternalError", "Message": "injected upload failure"}}
            raise ClientError(error, "PutObject")
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class CorruptingPutClient(FailingPutClient):
    """S3 client wrapper that stores other bytes for keys that end with ``fail_suffix``."""

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(self._fail_suffix):
            kwargs = {**kwargs, "Body": b"bytes that are not the uploaded model"}
        return self._client.put_object(**kwargs)


def _object(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _pointer(s3: Any) -> dict[str, Any]:
    return dict(json.loads(_object(s3, f"{PREFIX}/{ACTIVE_POINTER_NAME}")))


def _version_key(version: str, name: str) -> str:
    return f"{PREFIX}/versions/{version}/{name}"


def _active_version(s3: Any) -> str:
    return load_bundle(open_store(ROOT, s3_client=s3)).version


def test_publish_then_open_follows_pointer(s3: Any, bundle_dir: Path,
                                           local_bundle: Bundle) -> None:
    uri = publish_bundle(bundle_dir, ROOT, s3_client=s3)

    store = open_store(ROOT, s3_client=s3)
    loaded = load_bundle(store)

    assert uri == f"{ROOT}/versions/{local_bundle.version}"
    assert store.location == uri
    assert loaded.location == uri
    assert loaded.version == local_bundle.version
    np.testing.assert_array_equal(loaded.stage1.coef, local_bundle.stage1.coef)
    np.testing.assert_array_equal(loaded.stage1.mean, local_bundle.stage1.mean)
    np.testing.assert_array_equal(loaded.stage1.scale, local_bundle.stage1.scale)
    assert loaded.stage1.intercept == local_bundle.stage1.intercept
    assert loaded.band == local_bundle.band
    assert loaded.threshold == local_bundle.threshold
    assert loaded.schema == local_bundle.schema
    assert loaded.stage2_model == local_bundle.stage2_model


def test_publish_writes_pointer_last(s3: Any, bundle_dir: Path, local_bundle: Bundle) -> None:
    counter = S3CallCounter(s3)

    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    operations = list(counter.operations)

    pointer = _pointer(s3)
    assert pointer["version"] == local_bundle.version
    assert pointer["manifest_sha256"] == local_bundle.manifest["manifest_sha256"]
    assert operations.count("PutObject") == len(local_bundle.manifest["files"]) + 2
    assert operations[-1] == "PutObject"
    assert "GetObject" in operations[:-1]


def test_open_version_prefix_directly(s3: Any, bundle_dir: Path, local_bundle: Bundle) -> None:
    uri = publish_bundle(bundle_dir, ROOT, s3_client=s3)
    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{ACTIVE_POINTER_NAME}")

    store = open_store(uri, s3_client=s3)
    loaded = load_bundle(store)

    assert store.location == uri
    assert loaded.version == local_bundle.version


def test_replaced_stage2_file_rejected(s3: Any, bundle_dir: Path, local_bundle: Bundle) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    stage2_file = local_bundle.manifest["stage2"]["file"]
    s3.put_object(Bucket=BUCKET, Key=_version_key(local_bundle.version, stage2_file),
                  Body=b"a different model")

    with pytest.raises(BundleIntegrityError, match=rf"/{stage2_file}: SHA-256 mismatch"):
        load_bundle(open_store(ROOT, s3_client=s3))


def test_edited_manifest_rejected(s3: Any, bundle_dir: Path, local_bundle: Bundle) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    key = _version_key(local_bundle.version, MANIFEST_NAME)
    manifest = json.loads(_object(s3, key))
    manifest["decision_threshold"] = 0.001
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())

    with pytest.raises(BundleIntegrityError, match=r"manifest\.json: content does not match"):
        load_bundle(open_store(ROOT, s3_client=s3))


def test_prefix_without_bundle_or_pointer(s3: Any) -> None:
    with pytest.raises(BundleError) as raised:
        open_store(f"s3://{BUCKET}/nothing-published", s3_client=s3)

    message = str(raised.value)
    assert f"s3://{BUCKET}/nothing-published" in message
    assert "neither manifest.json nor ACTIVE.json" in message
    assert "python -m training publish" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not json", "invalid pointer"),
        (b'["20250101T000000Z-abc"]', "invalid pointer"),
        (b'{"bundle": "20250101T000000Z-abc"}', "invalid pointer"),
        (b'{"version": 7}', "invalid version 7"),
        (b'{"version": ""}', "invalid version ''"),
        (b'{"version": "../../other-bucket-prefix"}', "invalid version '../../other"),
        (b'{"version": ".."}', "invalid version '..'"),
    ],
)
def test_invalid_pointer_rejected(s3: Any, content: bytes, expected: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{ACTIVE_POINTER_NAME}", Body=content)

    with pytest.raises(BundleError) as raised:
        open_store(ROOT, s3_client=s3)

    assert f"{ROOT}/{ACTIVE_POINTER_NAME}" in str(raised.value)
    assert expected in str(raised.value)


def test_pointer_to_missing_version(s3: Any) -> None:
    pointer = {"version": "20990101T000000Z-missing"}
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{ACTIVE_POINTER_NAME}",
                  Body=json.dumps(pointer).encode())

    store = open_store(ROOT, s3_client=s3)
    with pytest.raises(BundleError) as raised:
        load_bundle(store)

    message = str(raised.value)
    assert f"{ROOT}/versions/20990101T000000Z-missing/manifest.json" in message
    assert "not found" in message


def test_second_publish_switches_pointer(s3: Any, bundle_dir: Path, second_bundle_dir: Path,
                                         local_bundle: Bundle) -> None:
    first = local_bundle.version
    second = load_bundle(DirectoryStore(second_bundle_dir)).version

    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    assert _active_version(s3) == first
    publish_bundle(second_bundle_dir, ROOT, s3_client=s3)

    assert _pointer(s3)["version"] == second
    assert _active_version(s3) == second
    for name in [*local_bundle.manifest["files"], MANIFEST_NAME]:
        assert _object(s3, _version_key(first, name)) == (bundle_dir / name).read_bytes()
    rollback = load_bundle(open_store(f"{ROOT}/versions/{first}", s3_client=s3))
    assert rollback.version == first


def test_failed_upload_keeps_pointer(s3: Any, bundle_dir: Path, second_bundle_dir: Path,
                                     local_bundle: Bundle) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    second = load_bundle(DirectoryStore(second_bundle_dir)).version
    failing = FailingPutClient(s3, fail_suffix=f"{second}/{MANIFEST_NAME}")

    with pytest.raises(BundleError) as raised:
        publish_bundle(second_bundle_dir, ROOT, s3_client=failing)

    assert _version_key(second, MANIFEST_NAME) in str(raised.value)
    assert "upload failed" in str(raised.value)
    assert _pointer(s3)["version"] == local_bundle.version
    assert _active_version(s3) == local_bundle.version


def test_corrupt_upload_keeps_pointer(s3: Any, bundle_dir: Path, second_bundle_dir: Path,
                                      local_bundle: Bundle) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    second = load_bundle(DirectoryStore(second_bundle_dir)).version
    stage2_file = local_bundle.manifest["stage2"]["file"]
    corrupting = CorruptingPutClient(s3, fail_suffix=f"{second}/{stage2_file}")

    with pytest.raises(BundleIntegrityError, match=rf"{second}/{stage2_file}: SHA-256 mismatch"):
        publish_bundle(second_bundle_dir, ROOT, s3_client=corrupting)

    assert _pointer(s3)["version"] == local_bundle.version
    assert _active_version(s3) == local_bundle.version


def test_cli_no_activate_keeps_pointer(s3: Any, bundle_dir: Path, second_bundle_dir: Path,
                                       local_bundle: Bundle) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    second = load_bundle(DirectoryStore(second_bundle_dir)).version

    exit_code = training_cli(
        ["publish", "--bundle", str(second_bundle_dir), "--to", ROOT, "--no-activate"]
    )

    assert exit_code == 0
    assert _pointer(s3)["version"] == local_bundle.version
    assert _active_version(s3) == local_bundle.version
    uploaded = load_bundle(open_store(f"{ROOT}/versions/{second}", s3_client=s3))
    assert uploaded.version == second


def test_runtime_serves_s3_bundle(s3: Any, bundle_dir: Path, local_bundle: Bundle,
                                  sqlite_url: str, make_client: Any) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    counter = S3CallCounter(s3)
    settings = Settings.from_env({}, model_uri=ROOT, database_url=sqlite_url)

    runtime = Runtime.start(settings, s3_client=s3)
    reads_at_start = list(counter.operations)
    client = make_client(runtime=runtime)
    examples = local_bundle.manifest["example_transactions"]
    responses = [
        client.post("/predict", json={"transaction_id": "s3-1",
                                      "features": examples["confident_genuine"]}),
        client.post("/predict", json={"transaction_id": "s3-2",
                                      "features": examples["uncertain"]}),
        client.post("/predict", json={"transaction_id": "s3-3",
                                      "features": examples["uncertain"]}),
    ]

    assert runtime.load_error is None
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == local_bundle.version
    assert responses[0].json()["stage"] == "stage1"
    assert responses[1].json()["stage"] == "stage2"
    assert responses[1].json()["degraded"] is False
    assert reads_at_start.count("GetObject") == len(local_bundle.manifest["files"]) + 2
    assert counter.operations == reads_at_start


def test_runtime_reports_missing_bundle(s3: Any, sqlite_url: str, make_client: Any) -> None:
    settings = Settings.from_env({}, model_uri=f"s3://{BUCKET}/empty", database_url=sqlite_url)

    runtime = Runtime.start(settings, s3_client=s3)
    client = make_client(runtime=runtime)
    health = client.get("/health")
    predict = client.post("/predict", json={"features": {"TX_AMOUNT": 10.0}})

    assert runtime.load_error is not None
    assert "neither manifest.json nor ACTIVE.json" in runtime.load_error
    assert health.status_code == 503
    assert health.json()["bundle_loaded"] is False
    assert predict.status_code == 503


def test_stage2_service_loads_active_bundle(s3: Any, bundle_dir: Path,
                                            local_bundle: Bundle) -> None:
    publish_bundle(bundle_dir, ROOT, s3_client=s3)
    names = local_bundle.schema.names
    uncertain = local_bundle.manifest["example_transactions"]["uncertain"]

    service = Stage2Service.start(Settings.from_env({}, model_uri=ROOT), s3_client=s3)
    answer = service.handle({"bundle_version": local_bundle.version, "correlation_id": "c-1",
                             "features": [[uncertain[name] for name in names]]})

    assert service.load_error is None
    assert answer["bundle_version"] == local_bundle.version
    assert len(answer["probabilities"]) == 1
    assert 0.0 <= answer["probabilities"][0] <= 1.0
