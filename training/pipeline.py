"""The training job: read, split, fit both stages, choose the band, evaluate, write a bundle."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fraudscore.routing import Band
from fraudscore.schema import FeatureSchema, FeatureSpec
from fraudscore.stage1 import LogisticScorer
from training import columns
from training.band import BandSearch, score_band, search_band
from training.data import check_columns, check_leakage, fingerprint, read_history
from training.evaluate import evaluate_scores, remove_known_compromised
from training.export import write_bundle
from training.models import Stage2Fit, fit_platt, fit_stage1, fit_stage2
from training.report import write_report
from training.splits import SplitConfig, Splits, split_history

logger = logging.getLogger(__name__)

PHASES = ("read", "split", "stage 1", "stage 2 (all rows)", "band", "stage 2 (uncertain rows)",
          "evaluate", "report", "bundle")
# Rows used for the single-feature leakage check; enough for a stable AUC.
LEAKAGE_SAMPLE_ROWS = 200_000
MIN_UNCERTAIN_FRAUDS = 30
# Feature ranges: see build_schema.
RANGE_FACTOR = 1000.0
MIN_UPPER_BOUND = 1e6


@dataclass
class TrainConfig:
    """Everything the training job needs besides the data location."""

    out_dir: Path
    features: tuple[str, ...] = columns.DEFAULT_FEATURES
    label: str = columns.LABEL
    splits: SplitConfig = field(default_factory=SplitConfig)
    max_escalation: float = 0.10
    band: tuple[float, float] | None = None
    remove_known_compromised: bool = True
    known_history_days: int = 7
    seed: int = 42
    progress: bool = True


@dataclass
class Candidate:
    """A stage-2 variant with its calibrated validation probabilities and band."""

    name: str
    fit: Stage2Fit
    calibration: Any
    validation_probability: np.ndarray
    search: BandSearch
    training_band: Band | None = None


class PhaseTimer:
    """Shows a progress bar over the job's phases and records each phase's wall time."""

    def __init__(self, enabled: bool) -> None:
        self.bar = tqdm(total=len(PHASES), desc="training", unit="phase", disable=not enabled)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        started = time.perf_counter()
        logger.info("phase %s: started", name)
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        logger.info("phase %s: done in %.1f s", name, self.seconds[name])
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def train(
    config: TrainConfig,
    *,
    data_path: str | Path | None = None,
    database_url: str | None = None,
    table: str = "transactions",
) -> Path:
    """Run the whole training job and return the bundle directory."""
    timer = PhaseTimer(config.progress)
    features = list(config.features)
    needed = [*features, config.label, columns.DATETIME, columns.CUSTOMER_ID]

    with timer.phase("read"):
        frame = read_history(data_path, database_url=database_url, table=table, needed=needed)
        check_columns(frame, features, config.label)
        sample = frame.sample(min(len(frame), LEAKAGE_SAMPLE_ROWS), random_state=config.seed)
        check_leakage(sample, features, config.label)
        data_fingerprint = fingerprint(frame, [*features, config.label])

    with timer.phase("split"):
        splits = split_history(frame, config.splits, config.label)
        _remove_known_compromised(frame, splits, config)
        x = {name: getattr(splits, name)[features].to_numpy(np.float64)
             for name in ("train", "validation", "test")}
        y = {name: getattr(splits, name)[config.label].to_numpy(np.int64)
             for name in ("train", "validation", "test")}

    with timer.phase("stage 1"):
        stage1, _ = fit_stage1(x["train"], y["train"], seed=config.seed)
        calibration = fit_platt(stage1.raw_probability(x["validation"]), y["validation"])
        stage1 = LogisticScorer(stage1.mean, stage1.scale, stage1.coef, stage1.intercept,
                                calibration)
        p1 = {name: stage1.probability(x[name]) for name in x}

    forced = Band(*config.band) if config.band else None
    with timer.phase("stage 2 (all rows)"):
        fit_all = fit_stage2(x["train"], y["train"], x["validation"], y["validation"],
                             seed=config.seed)
    with timer.phase("band"):
        all_rows = _candidate("all", fit_all, x, y, p1, config, forced)
    with timer.phase("stage 2 (uncertain rows)"):
        uncertain = _uncertain_candidate(all_rows, fit_all, x, y, p1, config, forced)

    chosen = all_rows
    if uncertain is not None and uncertain.search.best.objective > all_rows.search.best.objective:
        chosen = uncertain
    logger.info("stage 2 trained on %s rows (objective all %.4f, uncertain %s)", chosen.name,
                all_rows.search.best.objective,
                f"{uncertain.search.best.objective:.4f}" if uncertain else "skipped")

    with timer.phase("evaluate"):
        band = Band(chosen.search.best.low, chosen.search.best.high)
        threshold = chosen.search.best.threshold
        evaluation = _evaluate(splits, x, y, p1, chosen, band, threshold)

    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}-{data_fingerprint[:8]}"
    comparison = _stage2_comparison(all_rows, uncertain)
    meta = {
        "bundle_version": version,
        "data_fingerprint": data_fingerprint,
        "splits": splits.description,
        "band": [band.low, band.high],
        "decision_threshold": threshold,
        "stage2_training_rows": chosen.name,
        "stage2_params": _public_params(chosen.fit.params),
        "stage2_trees": chosen.fit.best_iteration,
    }
    with timer.phase("report"):
        write_report(
            config.out_dir / "report",
            metrics=evaluation["metrics"],
            curves=evaluation["curves"],
            band=(band.low, band.high),
            threshold=threshold,
            stage1_val_probs=p1["validation"],
            escalation_curve=chosen.search.curve,
            meta=meta,
        )

    with timer.phase("bundle"):
        schema = build_schema(frame, features)
        manifest = {
            "bundle_version": version,
            "created_at": created.isoformat(),
            "training_data": {
                "fingerprint": data_fingerprint,
                "source": str(data_path) if data_path else f"postgresql table {table}",
                "rows": len(frame),
                "label": config.label,
                "splits": splits.description,
                "known_compromised_removed": config.remove_known_compromised,
            },
            "features": schema.to_list(),
            "stage1": stage1.to_dict(),
            "stage2": {
                "model": "xgboost",
                "training_rows": chosen.name,
                "training_band": chosen.training_band.to_dict() if chosen.training_band else None,
                "params": _public_params(chosen.fit.params),
                "trees": chosen.fit.best_iteration,
                "calibration": chosen.calibration.to_dict(),
                "xgboost_version": _xgboost_version(),
            },
            "band": band.to_dict(),
            "decision_threshold": threshold,
            "escalation": {
                "max_rate": config.max_escalation,
                "validation_rate": chosen.search.best.escalation_rate,
                "test_rate": evaluation["metrics"]["system"]["escalation_rate"],
            },
            "metrics": {
                "test": evaluation["metrics"],
                "validation": asdict(chosen.search.best),
                "stage2_comparison": comparison,
                "phase_seconds": timer.seconds,
            },
            "example_transactions": _examples(splits.test, features, p1["test"], band),
        }
        write_bundle(config.out_dir, manifest, chosen.fit.booster)
    timer.close()
    return config.out_dir


def _remove_known_compromised(frame: pd.DataFrame, splits: Splits, config: TrainConfig) -> None:
    if not config.remove_known_compromised or columns.CUSTOMER_ID not in frame.columns \
            or splits.description.get("method") != "time":
        return
    day = frame[columns.DATETIME].dt.normalize()
    delay = pd.Timedelta(days=config.splits.delay_days)
    known = pd.Timedelta(days=config.known_history_days)
    for name in ("validation", "test"):
        start = pd.Timestamp(splits.description[name][0])
        history = frame[(day >= start - delay - known) & (day < start - delay)]
        gap = frame[(day >= start - delay) & (day < start)]
        before = len(getattr(splits, name))
        kept = remove_known_compromised(history, getattr(splits, name), delay_period=gap,
                                        delay_days=config.splits.delay_days)
        setattr(splits, name, kept.reset_index(drop=True))
        logger.info("%s: removed %d transactions of known compromised cards",
                    name, before - len(kept))
    splits.description["rows"].update(validation=len(splits.validation), test=len(splits.test))


def _calibrated(fit: Stage2Fit, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> Any:
    import xgboost

    raw = fit.booster.predict(xgboost.DMatrix(x[rows]))
    return fit_platt(raw, y[rows])


def _predict(fit: Stage2Fit, calibration: Any, x: np.ndarray) -> np.ndarray:
    import xgboost

    return calibration.apply(fit.booster.predict(xgboost.DMatrix(x)).astype(np.float64))


def _candidate(name: str, fit: Stage2Fit, x: dict[str, np.ndarray], y: dict[str, np.ndarray],
               p1: dict[str, np.ndarray], config: TrainConfig, forced: Band | None,
               within: Band | None = None) -> Candidate:
    rows = np.ones(len(y["validation"]), dtype=bool) if within is None \
        else within.contains(p1["validation"])
    calibration = _calibrated(fit, x["validation"], y["validation"], rows)
    p2 = _predict(fit, calibration, x["validation"])
    if forced is not None:
        best = score_band(forced, y["validation"], p1["validation"], p2)
        search = BandSearch(best=best, evaluated=1, curve=[])
    else:
        search = search_band(y["validation"], p1["validation"], p2,
                             max_escalation=config.max_escalation, within=within)
    return Candidate(name, fit, calibration, p2, search, within)


def _uncertain_candidate(all_rows: Candidate, fit_all: Stage2Fit, x: dict[str, np.ndarray],
                         y: dict[str, np.ndarray], p1: dict[str, np.ndarray],
                         config: TrainConfig, forced: Band | None) -> Candidate | None:
    base = forced or Band(all_rows.search.best.low, all_rows.search.best.high)
    if base.low >= base.high:
        return None
    region = widen(base, p1["train"])
    train_rows = region.contains(p1["train"])
    validation_rows = region.contains(p1["validation"])
    frauds = int(y["train"][train_rows].sum())
    if frauds < MIN_UNCERTAIN_FRAUDS or y["validation"][validation_rows].sum() == 0:
        logger.info("uncertain-rows stage 2 skipped: %d training frauds in %s", frauds, region)
        return None
    fit = fit_stage2(x["train"][train_rows], y["train"][train_rows],
                     x["validation"][validation_rows], y["validation"][validation_rows],
                     seed=config.seed)
    return _candidate("uncertain", fit, x, y, p1, config, forced, within=region)


def widen(band: Band, p1_train: np.ndarray) -> Band:
    """Extend ``band`` by its own width on each side, measured in training quantiles."""
    sorted_p1 = np.sort(p1_train)
    low_q = np.searchsorted(sorted_p1, band.low) / len(sorted_p1)
    high_q = np.searchsorted(sorted_p1, band.high) / len(sorted_p1)
    width = max(high_q - low_q, 0.01)
    low = float(np.quantile(sorted_p1, max(0.0, low_q - width)))
    high = 1.0 if band.high >= 1.0 else float(np.quantile(sorted_p1, min(1.0, high_q + width)))
    return Band(min(low, band.low), max(high, band.high))


def _evaluate(splits: Splits, x: dict[str, np.ndarray], y: dict[str, np.ndarray],
              p1: dict[str, np.ndarray], chosen: Candidate, band: Band,
              threshold: float) -> dict[str, Any]:
    test = splits.test
    p2 = _predict(chosen.fit, chosen.calibration, x["test"])
    escalated = band.contains(p1["test"])
    system = np.where(escalated, p2, p1["test"])
    frame = test if columns.CUSTOMER_ID in test.columns and columns.DATETIME in test.columns \
        else None
    metrics = {
        "stage1": evaluate_scores(y["test"], p1["test"], threshold=threshold, frame=frame),
        "stage2": evaluate_scores(y["test"], p2, threshold=threshold, frame=frame),
        "system": evaluate_scores(y["test"], system, threshold=threshold, frame=frame,
                                  escalated=escalated),
    }
    curves = {"stage 1": (y["test"], p1["test"]), "stage 2": (y["test"], p2),
              "two-stage system": (y["test"], system)}
    return {"metrics": metrics, "curves": curves}


def _stage2_comparison(all_rows: Candidate, uncertain: Candidate | None) -> dict[str, Any]:
    result: dict[str, Any] = {"all": _summary(all_rows)}
    result["uncertain"] = _summary(uncertain) if uncertain else None
    return result


def _summary(candidate: Candidate) -> dict[str, Any]:
    best = candidate.search.best
    return {
        "validation_objective": best.objective,
        "validation_average_precision": best.average_precision,
        "validation_recall": best.recall,
        "escalation_rate": best.escalation_rate,
        "band": [best.low, best.high],
        "training_band": candidate.training_band.to_dict() if candidate.training_band else None,
        "grid": candidate.fit.candidates,
    }


def build_schema(frame: pd.DataFrame, features: Sequence[str]) -> FeatureSchema:
    """Valid ranges of the features, wide enough for every plausible transaction.

    The ranges reject nonsense (a negative count, an amount of 1e300), not rare values:
    the largest purchase must still be scored. A feature never seen below 0 gets a
    minimum of 0, otherwise ``RANGE_FACTOR`` times the observed minimum. One whose values
    all lie in [0, 1] (flags, risk shares) gets a maximum of 1; any other a maximum of
    ``RANGE_FACTOR`` times the observed maximum, at least ``MIN_UPPER_BOUND``. A feature
    whose training values are all whole numbers accepts only whole numbers.
    """
    specs = []
    for name in features:
        values = frame[name].to_numpy(np.float64)
        lowest, highest = float(values.min()), float(values.max())
        minimum = 0.0 if lowest >= 0 else RANGE_FACTOR * lowest
        bounded = lowest >= 0 and highest <= 1
        maximum = 1.0 if bounded else max(RANGE_FACTOR * highest, MIN_UPPER_BOUND)
        specs.append(FeatureSpec(
            name, minimum, maximum,
            integer=bool(np.all(values == np.floor(values))),
            observed_minimum=lowest, observed_maximum=highest,
        ))
    return FeatureSchema(specs)


def _examples(test: pd.DataFrame, features: Sequence[str], p1: np.ndarray,
              band: Band) -> dict[str, dict[str, float]]:
    examples: dict[str, dict[str, float]] = {}
    groups = {
        "confident_genuine": np.flatnonzero(p1 < band.low),
        "uncertain": np.flatnonzero(band.contains(p1)),
        "confident_fraud": np.flatnonzero(p1 >= band.high),
    }
    for name, rows in groups.items():
        if len(rows):
            row = rows[np.argsort(p1[rows])[len(rows) // 2]]
            examples[name] = {f: float(test[f].iloc[row]) for f in features}
    return examples


def _public_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "nthread"}


def _xgboost_version() -> str:
    import xgboost

    return str(xgboost.__version__)
