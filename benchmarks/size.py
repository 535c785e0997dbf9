"""Figure 4: deployment size of each function plus its layers, unzipped.

Sizes are the bytes of the build output (function directory plus the shared layer), as
Lambda counts them against its 250 MiB limit. ``make sam-build`` ships .pyc, so the
build output is measured as it is, and a copy without ``__pycache__`` shows the size
without .pyc. The reference is one function holding both models and every distribution
they need, without .pyc and after ``compileall``.
"""

from __future__ import annotations

from pathlib import Path

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

    over = "; reference over the limit" if reference_compiled > LAMBDA_LIMIT_MIB else ""
    figures = []
    for name in ("stage 1", "stage 2"):
        source = deployments.tree_size(prepared.functions[name].source_dirs) / MIB
        figures.append(Figure(
            GROUP, f"{name} + layers, without .pyc", "MiB", source, reference=reference_source,
        ))
        build = [deployments.FUNCTION_DIRS[name], deployments.LAYER_DIR]
        size = deployments.tree_size(build) / MIB
        compiled_files = _count_pyc(build)
        contents = (f"{compiled_files:,} .pyc files" if compiled_files
                    else "no .pyc: built by plain `sam build`, not `make sam-build`")
        limit = TARGETS_MIB[name]
        figures.append(Figure(
            GROUP, f"{name} + layers, build output as shipped", "MiB", size,
            reference=reference_compiled, target=f"< {limit:.0f} MiB", met=size < limit,
            note=f"{contents}; Lambda limit {LAMBDA_LIMIT_MIB} MiB{over}",
            extra={"pyc_files": compiled_files},
        ))
    return figures


def _count_pyc(paths: list[Path]) -> int:
    return sum(1 for root in paths for _ in root.rglob("*.pyc"))
