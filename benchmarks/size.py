"""Figure 4: deployment size of each function plus its layers, unzipped.

Sizes are the bytes of the ``sam build`` output (function directory plus the shared
layer), as Lambda counts them against its 250 MiB limit, and the same after
``compileall`` (what shipping .pyc would cost). The reference is one function holding
both models and every distribution they need.
"""

from __future__ import annotations

from benchmarks import deployments
from benchmarks.measure import Figure
from benchmarks.workspace import Workspace

GROUP = "deployment size"
MIB = 1024 * 1024
LAMBDA_LIMIT_MIB = 250
TARGETS_MIB = {"stage 1": 100.0, "stage 2": 230.0}


def run(workspace: Workspace) -> list[Figure]:
    """Measure the unzipped size of each deployment, with and without .pyc."""
    missing = deployments.build_output_missing()
    if missing:
        return [Figure(GROUP, "deployment size", "MiB", None, note=f"skipped: {missing}")]
    prepared = deployments.prepare(workspace)
    reference = prepared.functions["reference"]
    reference_source = deployments.tree_size(reference.source_dirs) / MIB
    reference_compiled = deployments.tree_size(reference.compiled_dirs) / MIB

    figures = []
    for name in ("stage 1", "stage 2"):
        build = [deployments.FUNCTION_DIRS[name], deployments.LAYER_DIR]
        size = deployments.tree_size(build) / MIB
        limit = TARGETS_MIB[name]
        figures.append(Figure(
            GROUP, f"{name} + layers, unzipped (sam build)", "MiB", size,
            reference=reference_source, target=f"< {limit:.0f} MiB", met=size < limit,
            note=f"Lambda limit {LAMBDA_LIMIT_MIB} MiB; reference over the limit"
            if reference_source > LAMBDA_LIMIT_MIB else f"Lambda limit {LAMBDA_LIMIT_MIB} MiB",
        ))
        compiled = deployments.tree_size(prepared.functions[name].compiled_dirs) / MIB
        figures.append(Figure(
            GROUP, f"{name} + layers with .pyc", "MiB", compiled, reference=reference_compiled,
            target=f"< {LAMBDA_LIMIT_MIB} MiB (Lambda limit)", met=compiled < LAMBDA_LIMIT_MIB,
        ))
    return figures
