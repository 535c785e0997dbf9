"""Figure 1: the scoring core on one transaction, and stage 2 on one escalated row.

The core is what the service runs per transaction before it builds the response: schema
validation, the stage-1 probability and routing (the band check and the threshold). The
reference does the usual ``pd.DataFrame([features])`` and ``Pipeline.predict_proba``,
then calibration, band check and threshold. Both cycle through rows of the test period.
"""

from __future__ import annotations

import gc

import pandas as pd

from benchmarks.measure import Figure, summarize, time_calls
from benchmarks.workspace import Workspace
from fraudscore.stage2 import BoosterScorer

GROUP = "scoring core"
MIN_SPEEDUP = 20.0


def run(workspace: Workspace) -> list[Figure]:
    """Time one-transaction scoring of the service and of the reference, in microseconds."""
    bundle = workspace.bundle
    reference = workspace.reference
    rows = workspace.sample
    schema, stage1, band, threshold = bundle.schema, bundle.stage1, bundle.band, bundle.threshold

    def core(i: int) -> None:
        matrix = schema.validate_many([rows[i % len(rows)]])
        probability = stage1.probability(matrix)
        band.contains(probability)
        probability >= threshold  # noqa: B015 - the threshold comparison is part of the work

    def reference_core(i: int) -> None:
        reference.score_core(rows[i % len(rows)])

    mode = workspace.mode
    gc.collect()
    ours = summarize(time_calls(core, mode.scoring_runs, warmup=1000, scale=1e6))
    theirs = summarize(time_calls(reference_core, mode.reference_scoring_runs, warmup=50,
                                  scale=1e6))
    core_figure = Figure(
        GROUP, "validate + stage 1 + routing, one transaction", "us", ours.median,
        runs=ours.runs, p99=ours.p99, reference=theirs.median,
        target=f">= {MIN_SPEEDUP:.0f}x reference",
        note=f"reference p99 {theirs.p99:.0f} us over {theirs.runs} runs",
        extra={"reference_p99": theirs.p99, "reference_runs": theirs.runs},
    )
    core_figure.met = (core_figure.ratio or 0) >= MIN_SPEEDUP
    return [core_figure, _stage2(workspace)]


def _stage2(workspace: Workspace) -> Figure:
    bundle = workspace.bundle
    example = workspace.examples.get("uncertain") or workspace.sample[0]
    scorer = BoosterScorer.from_bytes(bundle.stage2_model, n_features=len(bundle.schema),
                                      calibration=bundle.stage2_calibration)
    matrix = bundle.schema.validate_many([example])
    frame = pd.DataFrame([example], columns=workspace.reference.features)
    reference = workspace.reference

    runs = max(workspace.mode.reference_scoring_runs, 200)
    ours = summarize(time_calls(lambda _i: scorer.probability(matrix), runs, warmup=50,
                                scale=1e6))
    theirs = summarize(time_calls(lambda _i: reference.stage2_probability(frame), runs,
                                  warmup=50, scale=1e6))
    return Figure(
        GROUP, "stage 2 probability, one escalated row", "us", ours.median, runs=ours.runs,
        p99=ours.p99, reference=theirs.median,
        note="Booster.inplace_predict (1 thread) vs XGBClassifier.predict_proba on a "
             "one-row DataFrame",
    )
