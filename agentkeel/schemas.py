"""JSON-schema checks shared by the workflow (tool arguments, structured answers) and the starters.

Deterministic and side-effect free, so workflows import it through the sandbox.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a valid JSON schema, or None when it is."""
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


def validation_error(schema: dict[str, Any], value: Any) -> str | None:
    """The first reason `value` does not fit `schema` (with its path), or None when it fits."""
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    err = errors[0]
    where = "/".join(str(p) for p in err.path)
    return f"{where}: {err.message}" if where else err.message


def parse_json_object(
    text: str | None, schema: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str | None]:
    """Decode model-produced JSON text into an object and check it against `schema`.

    Returns:
        `(value, None)` when it parses and fits, else `({}, reason)`.
    """
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON: {exc.msg} at position {exc.pos}"
    if not isinstance(value, dict):
        return {}, f"expected a JSON object, got {type(value).__name__}"
    if schema is not None:
        reason = validation_error(schema, value)
        if reason:
            return {}, reason
    return value, None
