"""AWS clients: one botocore session whose data loader neither scans every service nor
builds OrderedDicts."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import botocore
import botocore.loaders
import pytest

from fraudscore.aws_clients import (
    SERVICES,
    PlainJSONFileLoader,
    create_client,
    make_data_loader,
)

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


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_models_equal_botocore_own_loader(service_name: str) -> None:
    # The same data as botocore reads, in plain dicts instead of OrderedDicts.
    ours = make_data_loader()
    theirs = botocore.loaders.Loader()

    for type_name in ("service-2", "endpoint-rule-set-1"):
        loaded = ours.load_service_model(service_name, type_name)
        assert loaded == theirs.load_service_model(service_name, type_name)
        assert type(loaded) is dict
    assert ours.load_data("endpoints") == theirs.load_data("endpoints")


def test_plain_loader_reads_json_and_gzip(tmp_path: Path) -> None:
    loader = PlainJSONFileLoader()
    (tmp_path / "plain.json").write_text('{"b": 1, "a": {"c": [2]}}')
    (tmp_path / "packed.json.gz").write_bytes(gzip.compress(b'{"z": true}'))

    plain = loader.load_file(str(tmp_path / "plain"))

    assert plain == {"b": 1, "a": {"c": [2]}}
    assert list(plain) == ["b", "a"]
    assert loader.load_file(str(tmp_path / "packed")) == {"z": True}
    assert loader.exists(str(tmp_path / "packed"))
    assert loader.load_file(str(tmp_path / "missing")) is None
    assert not loader.exists(str(tmp_path / "missing"))


def test_plain_loader_prefers_json_to_gzip(tmp_path: Path) -> None:
    # botocore's own loader reads the .json file first too.
    loader = PlainJSONFileLoader()
    (tmp_path / "both.json").write_text('{"from": "json"}')
    (tmp_path / "both.json.gz").write_bytes(gzip.compress(b'{"from": "gzip"}'))
    theirs = botocore.loaders.JSONFileLoader()

    assert loader.load_file(str(tmp_path / "both")) == {"from": "json"}
    assert theirs.load_file(str(tmp_path / "both")) == {"from": "json"}
