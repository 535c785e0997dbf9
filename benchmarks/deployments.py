"""Lambda-like copies of the functions, their layers and the reference, with and without .pyc.

The service's functions come from the ``sam build`` output: the function directory, then
the shared layer, in the order Lambda puts them on ``sys.path`` (``/var/task``, then
``/opt/python``). The Lambda Python runtime provides boto3 and its dependencies, so a
third directory holds those, copied from this environment, with .pyc as the runtime image
has them. The reference is deployed the way the usual approach would be: its code plus
every distribution it needs, resolved from the installed packages' metadata.
"""

from __future__ import annotations

import compileall
import logging
import os
import py_compile
import shutil
import stat
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.workspace import ROOT, Workspace, copy_tree

logger = logging.getLogger(__name__)

BUILD_DIR = ROOT / ".aws-sam" / "build"
LAYER_DIR = BUILD_DIR / "SharedLayer" / "python"
FUNCTION_DIRS = {"stage 1": BUILD_DIR / "Stage1Function", "stage 2": BUILD_DIR / "Stage2Function"}
# What the Lambda Python runtime ships besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")
# Top-level requirements of the reference service (the usual approach, one function).
REFERENCE_REQUIREMENTS = ("scikit-learn", "pandas", "xgboost-cpu", "joblib", "fastapi",
                          "mangum", "SQLAlchemy", "pg8000")
REFERENCE_CODE = ("__init__.py", "reference.py", "reference_app.py")


@dataclass
class Deployment:
    """One function as Lambda would run it: its directories in ``sys.path`` order."""

    name: str
    source_dirs: list[Path]
    compiled_dirs: list[Path]
    module: str


@dataclass
class Deployments:
    """The copies of every function, plus the runtime-provided packages."""

    functions: dict[str, Deployment]
    runtime_dir: Path


def build_output_missing() -> str | None:
    """Return why the ``sam build`` output cannot be used, or None when it can."""
    for path in (*FUNCTION_DIRS.values(), LAYER_DIR):
        if not path.is_dir():
            return f"no sam build output at {path} (run `make sam-build`)"
    return None


def prepare(workspace: Workspace) -> Deployments:
    """Copy and compile the deployments once per run; later calls return the same copies."""
    cached = workspace.cache.get("deployments")
    if cached is not None:
        return cached
    base = workspace.work / "deploy"
    runtime_dir = base / "runtime"
    _copy_packages(RUNTIME_PACKAGES, runtime_dir)
    _compile(runtime_dir)

    functions: dict[str, Deployment] = {}
    modules = {"stage 1": "app", "stage 2": "handler"}
    for name, function_dir in FUNCTION_DIRS.items():
        functions[name] = _variants(base, name, [function_dir, LAYER_DIR], modules[name])

    reference_code = base / "reference-source" / "code"
    (reference_code / "benchmarks").mkdir(parents=True)
    for file_name in REFERENCE_CODE:
        shutil.copy2(ROOT / "benchmarks" / file_name, reference_code / "benchmarks" / file_name)
    reference_deps = base / "reference-source" / "deps"
    copy_distributions(reference_closure(), reference_deps)
    functions["reference"] = _variants(base, "reference", [reference_code, reference_deps],
                                       "benchmarks.reference_app")

    deployments = Deployments(functions=functions, runtime_dir=runtime_dir)
    workspace.cache["deployments"] = deployments
    return deployments


def _variants(base: Path, name: str, dirs: list[Path], module: str) -> Deployment:
    slug = name.replace(" ", "")
    source_dirs, compiled_dirs = [], []
    for index, directory in enumerate(dirs):
        source = base / f"{slug}-source" / str(index)
        compiled = base / f"{slug}-compiled" / str(index)
        copy_tree(directory, source)
        copy_tree(directory, compiled)
        _compile(compiled)
        source_dirs.append(source)
        compiled_dirs.append(compiled)
    return Deployment(name, source_dirs, compiled_dirs, module)


def _compile(directory: Path) -> None:
    # Unchecked hash-based .pyc: valid whatever the source's mtime becomes after zipping
    # and unzipping, which a timestamp-based .pyc is not (zip keeps 2-second times).
    compileall.compile_dir(
        str(directory), quiet=2, workers=os.cpu_count() or 1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _copy_packages(names: tuple[str, ...], target: Path) -> None:
    import botocore

    site_packages = Path(botocore.__file__).resolve().parents[1]
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        package = site_packages / name
        if package.is_dir():
            copy_tree(package, target / name)
        elif (site_packages / f"{name}.py").is_file():
            shutil.copy2(site_packages / f"{name}.py", target / f"{name}.py")
        else:
            logger.warning("runtime package %s not found in %s", name, site_packages)


def reference_closure() -> list[metadata.Distribution]:
    """The installed distributions that the reference needs, with their dependencies."""
    seen: dict[str, metadata.Distribution] = {}
    pending = list(REFERENCE_REQUIREMENTS)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        distribution = metadata.distribution(name)
        seen[name] = distribution
        for raw in distribution.requires or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return list(seen.values())


def copy_distributions(distributions: list[metadata.Distribution], target: Path) -> None:
    """Copy the installed files of ``distributions`` (no .pyc, no scripts) into ``target``."""
    for distribution in distributions:
        for file in distribution.files or []:
            if ".." in file.parts or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            source = Path(str(distribution.locate_file(file)))
            if not source.is_file():
                continue
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, destination)
            except OSError:
                shutil.copy2(source, destination)


def tree_size(paths: list[Path]) -> int:
    """Total bytes of the regular files under ``paths`` (symbolic links not followed)."""
    total = 0
    for root in paths:
        for directory, _subdirs, files in os.walk(root):
            for name in files:
                status = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(status.st_mode):
                    total += status.st_size
    return total
