"""Headline figures for the benchmark report: each script calls `emit()` where it computes one.

``python benchmarks/report.py`` (what ``nox -s bench`` runs) starts every script with the
environment variable ``TENANTLB_BENCH_OUT`` naming a file; `emit` appends the figure to it as one
JSON line. Run by hand, without the variable, `emit` does nothing and a script only prints, as it
always did. Targets are not given here: they are in one table, ``report.TARGETS``, so the report
lists a target even when the script that measures it failed.
"""

from __future__ import annotations

import json
import math
import os
from typing import Literal

ENV = "TENANTLB_BENCH_OUT"


def emit(
    name: str,
    value: float,
    unit: str,
    *,
    better: Literal["higher", "lower"] | None = None,
    note: str = "",
) -> None:
    """Record one figure of this run (a no-op unless ``TENANTLB_BENCH_OUT`` is set).

    Args:
        name: The figure's name, unique within its script (the report's row); a ratio says what
            it divides: ``"limits FixedWindow / tenantlb gcra"``.
        value: The figure; a ratio is taken within the run, side by side, by the script.
        unit: ``"us"``, ``"x"``, ``"req/s"``, ``"%"``, ...
        better: Which direction is an improvement, when one is.
        note: A short condition worth printing next to the figure.
    """
    path = os.environ.get(ENV)
    if not path:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"value of {name!r} must be a number, got {type(value).__name__}"
        raise TypeError(msg)
    record = {
        "name": name,
        "value": float(value) if math.isfinite(value) else repr(float(value)),
        "unit": unit,
        "better": better,
        "note": note,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
