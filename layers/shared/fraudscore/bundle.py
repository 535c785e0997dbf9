"""Model bundles: a JSON manifest plus the stage-2 model in XGBoost's own format.

A bundle never contains pickle or joblib data. Every file the manifest lists is checked
against its SHA-256 when the bundle is loaded, and the manifest carries a digest of its
own content, so an edited coefficient or band is caught as well as a swapped file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fraudscore.calibration import PlattCalibration
from fraudscore.exceptions import BundleError, BundleIntegrityError, BundleVersionError
from fraudscore.routing import Band
from fraudscore.schema import FeatureSchema
from fraudscore.stage1 import LogisticScorer
from fraudscore.storage import BundleStore

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
STAGE2_FORMATS = {".json": "json", ".ubj": "ubjson"}


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 digest of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """Digest of the manifest's canonical JSON, without its own ``manifest_sha256`` key."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return sha256_hex(canonical.encode("utf-8"))


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle, ready to serve.

    ``stage2_model`` contains the raw bytes of the XGBoost model; the stage-2 function
    turns them into a booster with :meth:`fraudscore.stage2.BoosterScorer.from_bytes`,
    so stage 1 never imports xgboost.
    """

    manifest: dict[str, Any]
    schema: FeatureSchema
    stage1: LogisticScorer
    band: Band
    threshold: float
    stage2_model: bytes
    stage2_calibration: PlattCalibration
    location: str

    @property
    def version(self) -> str:
        return str(self.manifest["bundle_version"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics", {}))

    @property
    def example_transaction(self) -> dict[str, float]:
        return dict(self.manifest.get("example_transactions", {}).get("uncertain", {}))


def load_bundle(store: BundleStore) -> Bundle:
    """Read, verify and parse the bundle in ``store``.

    Raises
    ------
    BundleVersionError
        If the manifest's format version is not :data:`FORMAT_VERSION`.
    BundleIntegrityError
        If the manifest or any file it lists does not match its SHA-256, naming the file.
    BundleError
        If the manifest is missing, not JSON, or lacks a required key.
    """
    logger.info("loading model bundle from %s", store.location)
    manifest = _read_manifest(store)
    files = _verified_files(store, manifest)

    try:
        stage2 = manifest["stage2"]
        bundle = Bundle(
            manifest=manifest,
            schema=FeatureSchema.from_list(manifest["features"]),
            stage1=LogisticScorer.from_dict(manifest["stage1"]),
            band=Band.from_dict(manifest["band"]),
            threshold=float(manifest["decision_threshold"]),
            stage2_model=files[stage2["file"]],
            stage2_calibration=PlattCalibration.from_dict(stage2["calibration"]),
            location=store.location,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{store.location}/{MANIFEST_NAME}: invalid manifest: {exc}") from exc

    if len(bundle.stage1.coef) != len(bundle.schema):
        raise BundleError(
            f"{store.location}/{MANIFEST_NAME}: stage-1 has {len(bundle.stage1.coef)} "
            f"coefficients but the schema has {len(bundle.schema)} features"
        )
    logger.info("loaded model bundle %s from %s", bundle.version, store.location)
    return bundle


def _read_manifest(store: BundleStore) -> dict[str, Any]:
    raw = store.read(MANIFEST_NAME)
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{store.location}/{MANIFEST_NAME}: not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{store.location}/{MANIFEST_NAME}: expected a JSON object")

    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleVersionError(
            f"{store.location}/{MANIFEST_NAME}: format_version {version!r} is not supported; "
            f"this code reads format_version {FORMAT_VERSION}"
        )
    expected = manifest.get("manifest_sha256")
    if expected != manifest_digest(manifest):
        raise BundleIntegrityError(
            f"{store.location}/{MANIFEST_NAME}: content does not match its manifest_sha256; "
            "the manifest was edited after it was written"
        )
    return manifest


def _verified_files(store: BundleStore, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise BundleError(f"{store.location}/{MANIFEST_NAME}: missing 'files' table")

    contents: dict[str, bytes] = {}
    for name, expected in listed.items():
        data = store.read(name)
        actual = sha256_hex(data)
        if actual != expected:
            raise BundleIntegrityError(
                f"{store.location}/{name}: SHA-256 mismatch (manifest {expected}, "
                f"file {actual}); the file is corrupt or was replaced"
            )
        contents[name] = data
    return contents
