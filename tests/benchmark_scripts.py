"""The scripts of benchmarks/ as modules, for tests (they are scripts, not a package)."""

import importlib.util
from pathlib import Path


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
