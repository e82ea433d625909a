"""Every workflow class the platform's worker registers."""

from __future__ import annotations

ALL_WORKFLOWS: list[type] = []
