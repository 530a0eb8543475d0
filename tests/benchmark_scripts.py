"""The scripts of benchmarks/ and lab/scripts/ as modules, for tests (they are scripts, not a package)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[1]


def load_benchmark(name):
    """benchmarks/NAME.py, or the diagnostic lab/scripts/NAME.py."""
    path = ROOT / "benchmarks" / f"{name}.py"
    if not path.is_file():
        path = ROOT / "lab" / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
