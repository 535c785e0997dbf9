"""Figure 7: training on the full reference data set, wall time and peak memory.

A child process trains the run's bundle with ``python -m training train``, under GNU
``time -v`` when /usr/bin/time exists. This group reports the child's wall time and peak
resident memory, and the phase times that the training job records in the bundle
manifest (``metrics.phase_seconds``). Full mode only, because smoke runs train on a
short window.
"""

from __future__ import annotations

from benchmarks.measure import Figure
from benchmarks.workspace import Workspace

GROUP = "training"
TARGET_SECONDS = 300.0
TARGET_MIB = 4096.0


def run(workspace: Workspace) -> list[Figure]:
    """Report the training child's wall time, peak memory and phase times."""
    training = workspace.training
    if training is None:
        return [Figure(GROUP, "training", "s", None,
                       note="skipped: --bundle given, no training in this run")]
    if workspace.mode.train_days is not None:
        return [Figure(GROUP, "training", "s", None,
                       note=f"skipped in {workspace.mode.name} mode (trained on "
                            f"{workspace.mode.train_days} days only); run --full")]

    verbose = training.time_verbose
    cpu = verbose.get("Percent of CPU this job got", "n/a")
    figures = [
        Figure(GROUP, "python -m training train, wall time", "s", training.wall_seconds,
               runs=1, target=f"< {TARGET_SECONDS:.0f} s",
               met=training.wall_seconds < TARGET_SECONDS,
               note=f"data: {workspace.data_source}; CPU {cpu}; reference fit of the same "
                    f"rows (one LogisticRegression, one XGBClassifier, no search) took "
                    f"{workspace.reference_fit_seconds:.1f} s",
               extra={"command": training.command, "time_verbose": verbose}),
        Figure(GROUP, "python -m training train, peak resident memory", "MiB",
               training.peak_rss_mib, runs=1, target=f"< {TARGET_MIB:.0f} MiB",
               met=training.peak_rss_mib < TARGET_MIB),
    ]
    for phase, seconds in training.phase_seconds.items():
        figures.append(Figure(GROUP, f"phase: {phase}", "s", float(seconds), runs=1))
    return figures
