"""Small statistics helpers: medians with min and max, percentiles, and figure formatting."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and the measurements themselves."""
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0-100) by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(numerator: dict[str, Any], denominator: dict[str, Any], digits: int = 3) -> float | None:
    """Ratio of two medians (None when either is missing or the denominator is 0)."""
    top, bottom = numerator.get("median"), denominator.get("median")
    if top is None or not bottom:
        return None
    return round(top / bottom, digits)


def fmt(figure: dict[str, Any] | None, unit: str = "", digits: int = 1) -> str:
    """`median [min-max] unit` for a table cell."""
    if not figure or figure.get("median") is None:
        return "n/a"
    med, low, high = figure["median"], figure["min"], figure["max"]
    text = f"{med:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"
    return f"{text} {unit}".rstrip()
