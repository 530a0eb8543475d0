"""Argument types every gmsa command shares: counts are checked where they are read, so `--limit -5` or
`--top-k 0` is a usage error (exit 2) naming the option, never a Python slice that quietly reads other data."""

from __future__ import annotations

import argparse

from gmsa.errors import GMSAError
from gmsa.plan import parse_budget


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # what argparse names in its own messages
    return parse


positive_int = _at_least(1)
"""An integer >= 1 (a count)."""
non_negative_int = _at_least(0)
"""An integer >= 0 (0: none, e.g. no cut)."""


def budget_argument(text: str) -> float | int | str:
    """A --budget value (`gmsa.plan.parse_budget`), as argparse wants its errors."""
    try:
        return parse_budget(text)
    except GMSAError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
