"""When a tool call needs a person: small declarative conditions, and Python predicates as activities.

A condition compares the call's arguments with literals, so a person is asked only
when it matters::

    amount_usd > 500
    country != "PT" and nights >= 7
    tier in ["gold", "platinum"] or amount_usd > 2000

Grammar: comparisons `ARG OP LITERAL` (OP one of `> >= < <= == != in`, ARG a top-level
argument name or a dotted path into objects), joined by `and` / `or` (`and` binds
tighter). Literals are JSON: numbers, strings in double quotes, `true`, `false`,
`null`, lists. An argument that is missing or of another type makes its comparison
false. Conditions are parsed when a team is loaded (a typo is an error then) and
evaluated inside the workflow: pure and deterministic.

A Python predicate (`@tool(requires_review=lambda amount_usd, **_: amount_usd > 500)`)
cannot travel in a team spec, so it runs as a local activity named
`<tool>.needs_review`, whose answer is recorded in the run's history.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>>=|<=|==|!=|>|<)
      | (?P<word>and\b|or\b|in\b)
      | (?P<literal>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|"(?:[^"\\]|\\.)*"|true\b|false\b|null\b|\[[^\]]*\])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_MISSING = object()


class ConditionError(ValueError):
    """A review condition does not parse (the message says where)."""


@dataclass(frozen=True)
class _Comparison:
    path: tuple[str, ...]
    op: str
    value: Any

    def holds(self, arguments: dict[str, Any]) -> bool:
        current: Any = arguments
        for part in self.path:
            if not isinstance(current, dict) or part not in current:
                return False
            current = current[part]
        try:
            if self.op == "in":
                return current in self.value
            if self.op == "==":
                return bool(current == self.value)
            if self.op == "!=":
                return bool(current != self.value)
            if isinstance(current, bool) or isinstance(self.value, bool):
                return False  # True > 0 is not what anyone means
            if self.op == ">":
                return bool(current > self.value)
            if self.op == ">=":
                return bool(current >= self.value)
            if self.op == "<":
                return bool(current < self.value)
            return bool(current <= self.value)
        except TypeError:  # "abc" > 5: another type, the comparison does not hold
            return False


@dataclass(frozen=True)
class ReviewCondition:
    """A parsed condition: `evaluate(arguments)` says whether the call needs review."""

    text: str
    any_of: tuple[tuple[_Comparison, ...], ...]
    """Disjunction of conjunctions."""

    def evaluate(self, arguments: dict[str, Any]) -> bool:
        """Whether the arguments meet the condition."""
        return any(all(c.holds(arguments) for c in group) for group in self.any_of)

    def arguments(self) -> set[str]:
        """The top-level argument names the condition reads."""
        return {c.path[0] for group in self.any_of for c in group}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ConditionError(f"review condition {text!r}: cannot read {text[pos:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


@functools.lru_cache(maxsize=512)
def parse_condition(text: str) -> ReviewCondition:
    """Parse a condition such as `amount_usd > 500 and currency == "USD"`.

    Raises:
        ConditionError: The text does not fit the grammar (see the module docstring).
    """
    tokens = _tokens(text)
    if not tokens:
        raise ConditionError("review condition is empty")
    groups: list[list[_Comparison]] = [[]]
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise ConditionError(f"review condition {text!r}: expected ARG OP VALUE at the end")
        (k1, name), (k2, op), (k3, literal) = tokens[i : i + 3]
        if k1 != "name" or not (k2 == "op" or (k2 == "word" and op == "in")) or k3 != "literal":
            raise ConditionError(f"review condition {text!r}: expected ARG OP VALUE near {name!r}")
        value = json.loads(literal)
        if op == "in" and not isinstance(value, list):
            raise ConditionError(f"review condition {text!r}: 'in' needs a list, got {literal}")
        groups[-1].append(_Comparison(tuple(name.split(".")), op, value))
        i += 3
        if i == len(tokens):
            break
        kind, word = tokens[i]
        if kind != "word" or word not in ("and", "or"):
            raise ConditionError(f"review condition {text!r}: expected 'and' or 'or' before {word!r}")
        if word == "or":
            groups.append([])
        i += 1
    return ReviewCondition(text=text.strip(), any_of=tuple(tuple(g) for g in groups))


def review_check_name(tool: str) -> str:
    """The local activity that runs a tool's Python review predicate."""
    return f"{tool}.needs_review"


def review_check_activity(
    tool: str,
    call_arguments: Callable[[dict[str, Any], str], tuple[tuple[Any, ...], dict[str, Any]]],
    predicate: Callable[..., bool],
) -> Callable[..., Any]:
    """A local activity answering whether one call of `tool` needs review, by `predicate`."""
    from temporalio import activity

    from agentkeel.contracts import ToolRequest

    @activity.defn(name=review_check_name(tool))
    async def needs_review(request: ToolRequest) -> bool:
        args, kwargs = call_arguments(request.arguments, tool)
        return bool(predicate(*args, **kwargs))

    return needs_review
