"""AWS clients: one botocore session whose data loader does not scan every service."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import botocore
import pytest

from fraudscore.aws_clients import SERVICES, create_client

DATA_DIR = Path(botocore.__file__).parent / "data"


@pytest.fixture(autouse=True)
def offline_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_client_for_each_service(service_name: str) -> None:
    client = create_client(service_name, endpoint_url="http://127.0.0.1:1")

    assert client.meta.service_model.service_name == service_name
    assert client.meta.region_name == "us-east-1"


def test_first_client_lists_no_service_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[str] = []
    original = os.listdir

    def counting_listdir(path: str | os.PathLike[str] = ".") -> list[str]:
        listed.append(os.fspath(path))
        return original(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)

    create_client("lambda")

    # botocore's own loader lists the data folder and every service folder in it.
    assert os.fspath(DATA_DIR) not in listed
    assert len(listed) <= 4, listed


def test_unknown_service_rejected() -> None:
    with pytest.raises(ValueError, match="'dynamodb'"):
        create_client("dynamodb")


def test_data_path_models_still_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A model in an AWS_DATA_PATH folder, under a newer API version, is the one used.
    source = DATA_DIR / "sqs" / "2012-11-05"
    if not (source / "service-2.json.gz").exists():
        pytest.skip(f"botocore stores the SQS model differently: no {source}/service-2.json.gz")
    model = json.loads(gzip.decompress((source / "service-2.json.gz").read_bytes()))
    model["metadata"]["apiVersion"] = "2099-01-01"
    target = tmp_path / "sqs" / "2099-01-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    shutil.copy(source / "endpoint-rule-set-1.json.gz", target)
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))

    client = create_client("sqs")

    assert client.meta.service_model.api_version == "2099-01-01"
