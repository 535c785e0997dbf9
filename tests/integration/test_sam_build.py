"""Unzipped size of each built Lambda function plus its layers, against AWS's 250 MiB limit.

Measures `sam build` output. With SAM_CLI set to a `sam` executable, the test builds the
template into a temporary directory first (Python 3.12 must be on PATH). Otherwise it
measures an existing .aws-sam/build, and skips when there is none.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cloudformation import load_template

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUILD_DIR = ROOT / ".aws-sam" / "build"

# Lambda quota: deployment package (function code plus all layers) unzipped.
LIMIT_MIB = 250.0
MIB = 1024 * 1024




def directory_size(path: Path) -> int:
    """Return the total size in bytes of the files under ``path`` (symlinks not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sam = os.environ.get("SAM_CLI")
    if sam:
        out = tmp_path_factory.mktemp("sam-build")
        result = subprocess.run(
            [sam, "build", "--template-file", str(ROOT / "template.yaml"),
             "--build-dir", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
        )
        assert result.returncode == 0, f"sam build failed:\n{result.stdout}\n{result.stderr}"
        return out

    if not (DEFAULT_BUILD_DIR / "template.yaml").is_file():
        pytest.skip(f"no build output in {DEFAULT_BUILD_DIR}: run `make sam-build` first, "
                    "or set SAM_CLI to the sam executable")
    return DEFAULT_BUILD_DIR


def package_sizes(build_dir: Path) -> dict[str, tuple[float, float]]:
    """Map each built function to (code MiB, layers MiB), from the built template."""
    template = load_template(build_dir / "template.yaml")
    resources = template["Resources"]
    default_layers = template.get("Globals", {}).get("Function", {}).get("Layers", [])

    sizes = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        code_dir = build_dir / properties["CodeUri"]
        assert code_dir.is_dir(), f"{name}: built code not found at {code_dir}"

        layer_bytes = 0
        for layer in properties.get("Layers", default_layers):
            layer_resource = resources[layer["Ref"]]
            assert layer_resource["Type"] == "AWS::Serverless::LayerVersion", layer
            layer_dir = build_dir / layer_resource["Properties"]["ContentUri"]
            assert layer_dir.is_dir(), f"{name}: built layer not found at {layer_dir}"
            layer_bytes += directory_size(layer_dir)

        sizes[name] = (directory_size(code_dir) / MIB, layer_bytes / MIB)
    return sizes


def test_functions_fit_lambda_size_limit(build_dir):
    sizes = package_sizes(build_dir)
    assert sizes, f"no functions in {build_dir / 'template.yaml'}"

    rows = [f"{'function':<24} {'code MiB':>9} {'layers MiB':>11} {'total MiB':>10}"]
    for name, (code, layers) in sorted(sizes.items()):
        rows.append(f"{name:<24} {code:>9.1f} {layers:>11.1f} {code + layers:>10.1f}")
    table = "\n".join(rows)
    print(f"\nunzipped sizes in {build_dir} (limit {LIMIT_MIB:.0f} MiB):\n{table}")

    for name, (code, layers) in sizes.items():
        assert code + layers < LIMIT_MIB, f"{name} is {code + layers:.1f} MiB\n{table}"
