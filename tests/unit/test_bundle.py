"""Bundle files: hashes, format version, manifest digest, stage-2 fidelity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost

from fraudscore.bundle import FORMAT_VERSION, load_bundle, manifest_digest
from fraudscore.calibration import PlattCalibration
from fraudscore.exceptions import BundleError, BundleIntegrityError, BundleVersionError
from fraudscore.stage2 import BoosterScorer
from fraudscore.storage import DirectoryStore
from training.columns import DEFAULT_FEATURES
from training.models import fit_stage2


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle_dir, target)
    return target


def _rewrite_manifest(path: Path, change, *, redigest: bool) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    if redigest:
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_has_no_pickle(bundle_dir: Path) -> None:
    for file in bundle_dir.rglob("*"):
        if file.is_file():
            head = file.read_bytes()[:2]
            assert head not in {b"\x80\x04", b"\x80\x05"}, f"{file} looks like a pickle"
            assert file.suffix not in {".pkl", ".pickle", ".joblib"}


def test_load_verifies_and_parses(bundle_dir: Path) -> None:
    bundle = load_bundle(DirectoryStore(bundle_dir))

    assert bundle.manifest["format_version"] == FORMAT_VERSION
    assert bundle.schema.names == DEFAULT_FEATURES
    assert 0.0 <= bundle.band.low <= bundle.band.high <= 1.0
    assert 0.0 < bundle.threshold < 1.0


def test_tampered_stage2_file_rejected(bundle_copy: Path) -> None:
    model = bundle_copy / "stage2.ubj"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))

    with pytest.raises(BundleIntegrityError, match=r"stage2\.ubj"):
        load_bundle(DirectoryStore(bundle_copy))


def test_tampered_metrics_file_rejected(bundle_copy: Path) -> None:
    (bundle_copy / "metrics.json").write_text("{}")

    with pytest.raises(BundleIntegrityError, match=r"metrics\.json"):
        load_bundle(DirectoryStore(bundle_copy))


def test_edited_manifest_rejected(bundle_copy: Path) -> None:
    def raise_threshold(manifest: dict) -> None:
        manifest["decision_threshold"] = 0.99

    _rewrite_manifest(bundle_copy, raise_threshold, redigest=False)

    with pytest.raises(BundleIntegrityError, match=r"manifest\.json"):
        load_bundle(DirectoryStore(bundle_copy))


def test_unknown_format_version_rejected(bundle_copy: Path) -> None:
    def bump(manifest: dict) -> None:
        manifest["format_version"] = FORMAT_VERSION + 1

    _rewrite_manifest(bundle_copy, bump, redigest=True)

    with pytest.raises(BundleVersionError, match="format_version"):
        load_bundle(DirectoryStore(bundle_copy))


def test_missing_file_named(bundle_copy: Path) -> None:
    (bundle_copy / "stage2.ubj").unlink()

    with pytest.raises(BundleError, match=r"stage2\.ubj"):
        load_bundle(DirectoryStore(bundle_copy))


def test_manifest_not_json_rejected(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json")

    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(DirectoryStore(bundle_copy))


def test_file_name_cannot_escape_bundle(bundle_copy: Path) -> None:
    def escape(manifest: dict) -> None:
        manifest["files"]["../outside"] = "0" * 64

    _rewrite_manifest(bundle_copy, escape, redigest=True)

    with pytest.raises(BundleError, match="leaves the bundle"):
        load_bundle(DirectoryStore(bundle_copy))


def test_bundled_stage2_equals_trained_model(simulated_history: Path) -> None:
    history = pd.read_parquet(simulated_history)
    x = history[list(DEFAULT_FEATURES)].to_numpy(np.float64)
    y = history["TX_FRAUD"].to_numpy()
    fit = fit_stage2(x[:40_000], y[:40_000], x[40_000:], y[40_000:],
                     grid=({"max_depth": 4, "learning_rate": 0.3},), max_rounds=50)
    expected = fit.booster.predict(xgboost.DMatrix(x))

    exported = bytes(fit.booster.save_raw(raw_format="ubj"))  # what write_bundle stores
    scorer = BoosterScorer.from_bytes(exported, n_features=x.shape[1],
                                      calibration=PlattCalibration())
    actual = scorer.probability(x)

    assert np.max(np.abs(actual - expected)) < 1e-6


def test_stage1_coefficients_round_trip(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    bundle = load_bundle(DirectoryStore(bundle_dir))

    np.testing.assert_array_equal(bundle.stage1.coef, manifest["stage1"]["coefficients"])
    assert manifest["stage1"]["model"] == "logistic_regression"
