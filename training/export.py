"""Writing a model bundle directory: manifest.json, the stage-2 model, metrics.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import xgboost

from fraudscore.bundle import FORMAT_VERSION, MANIFEST_NAME, manifest_digest, sha256_hex

logger = logging.getLogger(__name__)

STAGE2_FILE = "stage2.ubj"
METRICS_FILE = "metrics.json"


def write_bundle(out_dir: Path, manifest: dict[str, Any], booster: xgboost.Booster) -> Path:
    """Write the bundle files and a manifest listing their SHA-256; return the manifest path.

    ``manifest`` contains everything but ``format_version``, ``files`` and the digests,
    which are filled in here. The stage-2 model is XGBoost's own UBJSON format.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model_bytes = bytes(booster.save_raw(raw_format="ubj"))
    metrics_bytes = json.dumps(manifest["metrics"], indent=2, sort_keys=True,
                               allow_nan=False).encode("utf-8")
    (out_dir / STAGE2_FILE).write_bytes(model_bytes)
    (out_dir / METRICS_FILE).write_bytes(metrics_bytes)

    full = {"format_version": FORMAT_VERSION, **manifest}
    full["stage2"] = {**manifest["stage2"], "file": STAGE2_FILE, "format": "ubjson",
                      "sha256": sha256_hex(model_bytes)}
    full["files"] = {STAGE2_FILE: sha256_hex(model_bytes), METRICS_FILE: sha256_hex(metrics_bytes)}
    full["manifest_sha256"] = manifest_digest(full)

    path = out_dir / MANIFEST_NAME
    path.write_text(json.dumps(full, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    logger.info("wrote bundle %s to %s", full["bundle_version"], out_dir)
    return path
