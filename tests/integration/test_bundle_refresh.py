"""A running service picks up a new valid bundle and refuses a bad one, keeping its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fraudscore.bundle import manifest_digest


@pytest.fixture
def live_bundle(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "live"
    shutil.copytree(bundle_dir, target)
    return target


def _republish(path: Path, version: str, change=None) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["bundle_version"] = version
    if change:
        change(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _predict(client, examples):  # type: ignore[no-untyped-def]
    response = client.post("/predict", json={"features": examples["uncertain"]})
    assert response.status_code == 200, response.text
    return response.json()


def test_new_valid_bundle_is_picked_up(make_client, live_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    client = make_client(model_uri=str(live_bundle), bundle_refresh_seconds=0.01)
    examples = json.loads((live_bundle / "manifest.json").read_text())["example_transactions"]
    original = _predict(client, examples)["model_version"]

    _republish(live_bundle, "next-version")
    __import__("time").sleep(0.05)
    answer = _predict(client, examples)

    assert answer["model_version"] == "next-version"
    assert answer["model_version"] != original
    assert answer["stage"] == "stage2"


@pytest.mark.parametrize("damage", ["hash", "format", "schema"])
def test_bad_bundle_is_refused(make_client, live_bundle: Path, damage: str) -> None:  # type: ignore[no-untyped-def]
    client = make_client(model_uri=str(live_bundle), bundle_refresh_seconds=0.01)
    examples = json.loads((live_bundle / "manifest.json").read_text())["example_transactions"]
    original = _predict(client, examples)["model_version"]

    if damage == "hash":
        (live_bundle / "stage2.ubj").write_bytes(b"not a model")
        _republish(live_bundle, "tampered")
    elif damage == "format":
        _republish(live_bundle, "future", lambda m: m.update(format_version=99))
    else:
        _republish(live_bundle, "renamed",
                   lambda m: m["features"][0].update(name="AMOUNT_IN_CENTS"))
    __import__("time").sleep(0.05)
    answer = _predict(client, examples)
    health = client.get("/health").json()

    assert answer["model_version"] == original
    assert health["model_version"] == original
    assert health["status"] == "degraded"
    assert health["bundle_refused"] is not None
    expected = {"hash": "SHA-256", "format": "format_version", "schema": "feature schema"}[damage]
    assert expected in health["bundle_refused"]
