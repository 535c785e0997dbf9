"""Stage-2 function logic: validate the invoke event, check the version, score rows."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudscore.bundle import Bundle, load_bundle
from fraudscore.bundle_refresh import BundleWatcher
from fraudscore.exceptions import FraudScoreError
from fraudscore.settings import Settings
from fraudscore.stage2 import BoosterScorer
from fraudscore.stage2_client import VERSION_MISMATCH_ERROR
from fraudscore.storage import open_store

logger = logging.getLogger(__name__)

MAX_ROWS_PER_INVOKE = 10_000


class Stage2VersionMismatchError(FraudScoreError):
    """The caller serves another bundle version than this function."""


# The Lambda runtime reports the exception class name as errorType; stage 1 relies on it.
assert Stage2VersionMismatchError.__name__ == VERSION_MISMATCH_ERROR


class Stage2InputError(FraudScoreError, ValueError):
    """The invoke event is not a valid stage-2 request."""


class Stage2NotReadyError(FraudScoreError):
    """The bundle failed to load when the container started."""


@dataclass
class Stage2Service:
    """A loaded stage-2 model, or the error that prevented loading it."""

    bundle: Bundle | None
    scorer: BoosterScorer | None
    load_error: str | None = None
    watcher: BundleWatcher | None = None

    @classmethod
    def start(cls, settings: Settings, *, s3_client: Any = None) -> Stage2Service:
        """Load and verify the bundle; keep the error instead of failing the import."""
        try:
            bundle = load_bundle(open_store(settings.model_uri, s3_client=s3_client))
            scorer = BoosterScorer.from_bytes(
                bundle.stage2_model,
                n_features=len(bundle.schema),
                calibration=bundle.stage2_calibration,
            )
        except (FraudScoreError, ValueError) as exc:
            logger.error("stage 2 failed to load its bundle: %s", exc)
            return cls(bundle=None, scorer=None, load_error=str(exc))
        watcher = BundleWatcher(settings.model_uri, settings.bundle_refresh_seconds,
                                s3_client=s3_client)
        return cls(bundle=bundle, scorer=scorer, watcher=watcher)

    def handle(self, event: Any) -> dict[str, Any]:
        """Return ``{"bundle_version", "probabilities"}`` for the event's feature rows."""
        if self.bundle is None or self.scorer is None:
            raise Stage2NotReadyError(f"model bundle not loaded: {self.load_error}")
        if not isinstance(event, dict):
            raise Stage2InputError("event must be a JSON object")

        version = event.get("bundle_version")
        if version != self.bundle.version:
            # Stage 1 may have picked up a newly published bundle first.
            self._refresh(force=True)
        if version != self.bundle.version:
            raise Stage2VersionMismatchError(
                f"request is for bundle {version!r}, this function serves {self.bundle.version}"
            )
        matrix = self._features(event.get("features"))
        probabilities = self.scorer.probability(matrix)
        logger.info("scored %d escalated row(s)", len(matrix))
        return {"bundle_version": self.bundle.version, "probabilities": probabilities.tolist()}

    def _refresh(self, *, force: bool) -> None:
        if self.watcher is None or self.bundle is None:
            return
        replacement = self.watcher.poll(self.bundle, force=force)
        if replacement is None:
            return
        try:
            self.scorer = BoosterScorer.from_bytes(
                replacement.stage2_model,
                n_features=len(replacement.schema),
                calibration=replacement.stage2_calibration,
            )
        except ValueError as exc:
            logger.error("rejected the stage-2 model of bundle %s: %s", replacement.version, exc)
            return
        self.bundle = replacement

    def _features(self, rows: Any) -> np.ndarray:
        assert self.bundle is not None
        width = len(self.bundle.schema)
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_ROWS_PER_INVOKE:
            raise Stage2InputError(
                f"features must be a list of 1 to {MAX_ROWS_PER_INVOKE} rows"
            )
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                raise Stage2InputError(f"features[{i}] must be a list of {width} numbers")
            for j, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not math.isfinite(value):
                    name = self.bundle.schema.names[j]
                    raise Stage2InputError(f"features[{i}][{j}] ({name}) must be a finite number")
        return np.asarray(rows, dtype=np.float64)
