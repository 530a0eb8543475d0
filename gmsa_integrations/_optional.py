"""Optional framework imports with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, packages: str) -> ModuleType:
    """Import `module`, or fail saying exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is not installed; install it with `pip install 'gmsa[{extra}]'` (or `pip install {packages}`)"
        ) from error
