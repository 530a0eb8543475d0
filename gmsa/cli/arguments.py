"""Argument types every gmsa command shares: counts are checked where they are read, so `--limit -5` or
`--top-k 0` is a usage error (exit 2) naming the option, never a Python slice that quietly reads other data."""

from __future__ import annotations

import argparse

from gmsa.errors import GMSAError
from gmsa.plan import parse_budget


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return value


def budget_argument(text: str) -> float | int | str:
    """A --budget value (`gmsa.plan.parse_budget`), as argparse wants its errors."""
    try:
        return parse_budget(text)
    except GMSAError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
