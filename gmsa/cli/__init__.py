"""Command lines: `gmsa` (ask), `gmsa-train` and `gmsa-eval`."""
