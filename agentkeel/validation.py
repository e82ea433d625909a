"""One way to tell people what pydantic refused: `where: what` per problem, joined by `; `.

Used by every place that turns a `ValidationError` into a one-line message (team files,
settings, fault flags, scenarios, the offline provider's control API, the starter API),
so the same mistake reads the same wherever it is made.
"""

from __future__ import annotations

from pydantic import ValidationError

_VALUE_ERROR = "Value error, "
"""pydantic's prefix for a validator's own `ValueError`: noise to a reader, who wants the reason."""


def format_validation_error(exc: ValidationError, *, top: str = "", prefix: str = "") -> str:
    """One line listing every problem, each prefixed by where it is (`agents.0.name: ...`).

    Args:
        exc: The error pydantic raised.
        top: Shown as the location of a problem with the whole document (an empty `loc`);
            empty shows the message alone.
        prefix: Put before every location, e.g. `models.fast` for a table inside a larger file.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = ".".join(p for p in (prefix, loc) if p) or top
        msg = str(err["msg"]).removeprefix(_VALUE_ERROR)
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
