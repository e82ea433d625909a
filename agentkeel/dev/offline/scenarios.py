r"""Scenario files of the offline provider: scripted, deterministic answers to chat completions.

A scenario is a YAML or JSON file holding an ordered list of rules. For each
request the provider walks the rules of every loaded scenario in order
(`--scenario` files first, then the built-in `agentkeel/scenarios/`) and
answers with the first rule that matches::

    name: travel
    rules:                       # first match wins
      - agent: planner           # optional: the asking agent (see below)
        turn: 1                  # optional: 1 + earlier answers of that agent in the conversation
        model: scripted          # optional: the requested model
        last_role: user          # optional: role of the last message
        last_contains: "flight"  # optional: substring of the last message's content (case-insensitive)
        respond:
          content: "text"        # and/or
          tool_calls:
            - name: transfer_to_flights
              arguments: {note: "book a flight"}   # a dict becomes a JSON string; a string is sent as is
          json: {...}            # the answer's content is this value as JSON (for response_format)
          usage: {prompt_tokens: 120, completion_tokens: 30}   # optional override
          status: 500            # optional: answer with this HTTP error instead (scripted faults)
          message: "..."         # optional: the error message when `status` is set

Answers may be filled in from the conversation with `{{ ... }}` placeholders, in
`content`, `message`, tool-call arguments and `json` values::

    name: travel
    extract:                     # values read from the goal (the first user message)
      destination: {pattern: '\bto\s+([A-Z]\w+)', default: Lisbon}
      nights: {pattern: '(\d+|one|two|three)\s+nights?', type: integer, ignore_case: true, default: 3}
    rules:
      - agent: planner
        turn: 2
        respond:
          tool_calls:
            - name: charge_card
              arguments:
                amount_usd: "{{tool.book_flight.price_usd + tool.book_hotel.price_usd}}"
                description: "{{goal.nights}} nights in {{goal.destination}}"
      - agent: planner
        turn: 3
        respond: {content: "Charged ${{tool.charge_card.amount_usd:,.2f}}."}

- `goal.NAME`: the value the scenario's `extract` entry NAME reads from the goal: the first
  group of the first match of `pattern`, converted to `type` (`string`, `integer`, which also
  reads the words one to twelve, or `number`), else its `default`.
- `tool.TOOL.FIELD`: FIELD of the latest result of the tool TOOL in the conversation (a tool
  message whose content is a JSON object, matched to its call through `tool_call_id`).
- Numbers, and `+` between terms: numbers are added, anything else is joined as text.
- `:SPEC` after the expression: a Python format spec (`:,.2f` writes 1,123.50).

A string that is one placeholder and nothing else becomes the value itself (a number stays a
number in tool-call arguments). A rule whose placeholders cannot all be filled (no such tool
result yet, a missing field, a format that does not fit the value) does not match, so the
next rule, or the default answer, answers instead. A placeholder naming a goal value the
scenario does not extract is refused when the file is loaded.

The asking agent is the `X-Keel-Agent` request header; without it, the name
after `agent:` in the system prompt, else the system message's `name`. When
none of those is present, a rule's `agent` still matches a system prompt that
contains the agent's name as a word.

The turn is 1 + the number of assistant messages in the request whose `name`
is the agent (every assistant message when the agent is unknown), so a
conversation replayed after a retry gets the same answer.

With no matching rule the answer is a deterministic default: with a JSON
response format, a minimal JSON document fitting the schema (`{}` for
`json_object`); otherwise the text `Done: <first 80 characters of the last
user or tool message>`, never a tool call, so agent loops end.

Usage, when not scripted, is about one token per four characters of the
prompt and of the answer, at least 1 each.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentkeel.validation import format_validation_error

DEFAULT_TEXT_CHARS = 80
"""How much of the last user/tool message the default text answer quotes."""


class ScenarioError(ValueError):
    """A scenario file cannot be read or does not fit the format (message is one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptedToolCall(_Strict):
    """A tool call a rule answers with."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the JSON string the API carries."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class ScriptedUsage(_Strict):
    """A usage override; a missing count is estimated."""

    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)


class Respond(_Strict):
    """What a matching rule answers."""

    content: str | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    json_value: Any = Field(default=None, alias="json")
    usage: ScriptedUsage | None = None
    status: int | None = Field(default=None, ge=400, le=599)
    message: str | None = None
    finish_reason: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _says_something(self) -> Respond:
        fields = self.model_fields_set
        if not ({"content", "tool_calls", "json_value", "status"} & fields):
            raise ValueError("respond needs content, tool_calls, json or status")
        if "json_value" in fields and "content" in fields:
            raise ValueError("respond takes content or json, not both")
        return self


class Rule(_Strict):
    """One scripted answer and the conditions under which it is given."""

    agent: str | None = None
    turn: int | None = Field(default=None, ge=1)
    model: str | None = None
    last_role: Literal["system", "user", "assistant", "tool"] | None = None
    last_contains: str | None = None
    respond: Respond


NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        (
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        )
    )
}
"""Words an `integer` extract reads as numbers ("one traveller", "three nights")."""


class _Unresolved(Exception):
    """A placeholder cannot be filled from this conversation: its rule does not match."""


def _convert(raw: str | int | float, kind: str) -> str | int | float:
    """`raw` as the extract's `kind` (`string`, `integer`, `number`).

    Raises:
        ValueError: `raw` is not a number of that kind.
    """
    if kind == "string":
        return str(raw).strip()
    text = str(raw).strip().lower()
    if kind == "integer":
        return NUMBER_WORDS[text] if text in NUMBER_WORDS else int(text)
    return float(NUMBER_WORDS.get(text, text))


class Extract(_Strict):
    """A value a scenario reads from the goal, for its `{{goal.NAME}}` placeholders."""

    pattern: str = Field(min_length=1)
    type: Literal["string", "integer", "number"] = "string"
    ignore_case: bool = False
    default: str | int | float

    @model_validator(mode="after")
    def _usable(self) -> Extract:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern is not a regular expression: {exc}") from None
        if compiled.groups < 1:
            raise ValueError("pattern needs a group: the value is its first group")
        try:
            _convert(self.default, self.type)
        except (ValueError, KeyError):
            raise ValueError(f"default {self.default!r} is not a {self.type}") from None
        return self

    def read(self, goal: str) -> str | int | float:
        """The first group of the pattern's first match in `goal`, converted; else the default."""
        found = re.search(self.pattern, goal, re.IGNORECASE if self.ignore_case else 0)
        if found is not None and found.group(1) is not None:
            try:
                return _convert(found.group(1), self.type)
            except (ValueError, KeyError):
                pass  # a match that is not a number of that kind: the goal did not say, use the default
        return _convert(self.default, self.type)


_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_REFERENCE = re.compile(r"(goal)\.([\w-]+)|(tool)\.([\w-]+)((?:\.[\w-]+)+)")


def _parse_placeholder(body: str) -> tuple[list[tuple[str, ...]], str]:
    """The terms of a placeholder's expression and its format spec.

    Each term is `("number", text)`, `("goal", NAME)` or `("tool", TOOL, FIELD, ...)`.

    Raises:
        ValueError: a term is none of those.
    """
    expression, _, spec = body.partition(":")
    terms: list[tuple[str, ...]] = []
    for raw in expression.split("+"):
        term = raw.strip()
        if _NUMBER.fullmatch(term):
            terms.append(("number", term))
            continue
        ref = _REFERENCE.fullmatch(term)
        if ref is None:
            raise ValueError(
                f"placeholder {{{{{body}}}}}: {term!r} is not goal.NAME, tool.TOOL.FIELD or a number"
            )
        if ref.group(1):
            terms.append(("goal", ref.group(2)))
        else:
            terms.append(("tool", ref.group(4), *ref.group(5).lstrip(".").split(".")))
    return terms, spec.strip()


def _strings(value: Any) -> Iterable[str]:
    """Every string inside `value` (a string, or lists and mappings of them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _respond_strings(respond: Respond) -> Iterable[str]:
    yield from _strings([respond.content, respond.message, respond.json_value])
    for call in respond.tool_calls:
        yield from _strings(call.arguments)


class Scenario(_Strict):
    """A named, ordered list of rules, and the values its answers read from the goal."""

    name: str = Field(min_length=1)
    extract: dict[str, Extract] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    source: str = ""

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _placeholders_parse(self) -> Scenario:
        # Refused at load time so a typo in a scenario is an error, not a rule that never matches.
        for index, rule in enumerate(self.rules):
            for text in _respond_strings(rule.respond):
                for body in _PLACEHOLDER.findall(text):
                    try:
                        terms, _ = _parse_placeholder(body)
                    except ValueError as exc:
                        raise ValueError(f"rules.{index}: {exc}") from None
                    for term in terms:
                        if term[0] == "goal" and term[1] not in self.extract:
                            raise ValueError(
                                f"rules.{index}: placeholder {{{{{body}}}}} names goal.{term[1]}, "
                                f"which `extract` does not define"
                            )
        return self


def load_scenario(path: Path) -> Scenario:
    """Read one scenario file (`.yaml`, `.yml` or `.json`).

    Raises:
        ScenarioError: unreadable, not YAML/JSON, or not the scenario format.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise ScenarioError(
            f"scenario {path}: not valid {path.suffix.lstrip('.').upper()}: {detail}"
        ) from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path}: expected a mapping with `name` and `rules`")
    data.setdefault("name", path.stem)
    try:
        return Scenario.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        raise ScenarioError(f"scenario {path}: {format_validation_error(exc, top='(top)')}") from None


def scenario_files(paths: Iterable[Path | str] = ()) -> list[Path]:
    """The files to load: the given paths, in order (a folder means its `*.yaml`/`*.yml`/`*.json`)."""
    files: list[Path] = []
    folders = [Path(p) for p in paths]
    for entry in folders:
        if entry.is_dir():
            files.extend(sorted(p for p in entry.iterdir() if p.suffix in (".yaml", ".yml", ".json")))
        else:
            files.append(entry)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def load_scenarios(paths: Iterable[Path | str] = ()) -> list[Scenario]:
    """Load every scenario, in matching order.

    Raises:
        ScenarioError: for the first invalid or missing file.
    """
    return [load_scenario(p) for p in scenario_files(paths)]


# --------------------------------------------------------------------------- matching


_AGENT_IN_PROMPT = re.compile(r"\bagent:\s*([A-Za-z0-9_.\-]+)", re.IGNORECASE)


def _text(content: Any) -> str:
    """The text of a message's content (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


@dataclass(frozen=True)
class ChatContext:
    """What rules match on, read once from a chat-completions request."""

    messages: list[dict[str, Any]]
    agent: str | None
    model: str
    system_prompt: str
    response_schema: dict[str, Any] | None
    json_mode: bool
    header_agent: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_request(cls, body: Mapping[str, Any], header_agent: str | None = None) -> ChatContext:
        """Build the context of a (validated) request body and its `X-Keel-Agent` header."""
        messages = [m for m in body.get("messages", []) if isinstance(m, Mapping)]
        system = next((m for m in messages if m.get("role") in ("system", "developer")), None)
        system_prompt = _text(system.get("content")) if system else ""
        agent = (header_agent or "").strip() or None
        if agent is None and system_prompt:
            found = _AGENT_IN_PROMPT.search(system_prompt)
            agent = found.group(1).rstrip(".") if found else None
        if agent is None and system and isinstance(system.get("name"), str) and system["name"]:
            agent = system["name"]
        schema, json_mode = None, False
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping):
            if fmt.get("type") == "json_schema":
                spec = fmt.get("json_schema")
                schema = spec.get("schema") if isinstance(spec, Mapping) else None
                schema = schema if isinstance(schema, dict) else {}
                json_mode = True
            elif fmt.get("type") == "json_object":
                json_mode = True
        return cls(
            messages=[dict(m) for m in messages],
            agent=agent,
            model=str(body.get("model", "")),
            system_prompt=system_prompt,
            response_schema=schema,
            json_mode=json_mode,
            header_agent=bool(header_agent),
        )

    def turn(self, agent: str | None) -> int:
        """1 + the assistant messages answered by `agent` (all of them when `agent` is None)."""
        return 1 + sum(
            1
            for m in self.messages
            if m.get("role") == "assistant" and (agent is None or m.get("name") == agent)
        )

    @property
    def last(self) -> dict[str, Any]:
        """The last message (empty when there is none)."""
        return self.messages[-1] if self.messages else {}

    def rule_agent(self, rule: Rule) -> tuple[bool, str | None]:
        """Whether `rule`'s agent condition holds, and the agent to count turns for."""
        if rule.agent is None:
            return True, self.agent
        if self.agent is not None:
            return self.agent == rule.agent, self.agent
        # Unknown agent: fall back to the agent's name as a word of the system prompt.
        if re.search(rf"\b{re.escape(rule.agent)}\b", self.system_prompt, re.IGNORECASE):
            return True, rule.agent
        return False, None

    def matches(self, rule: Rule) -> bool:
        """Whether every condition of `rule` holds for this request."""
        ok, agent = self.rule_agent(rule)
        if not ok:
            return False
        if rule.model is not None and rule.model != self.model:
            return False
        if rule.turn is not None and rule.turn != self.turn(agent):
            return False
        if rule.last_role is not None and self.last.get("role") != rule.last_role:
            return False
        return not (
            rule.last_contains is not None
            and rule.last_contains.lower() not in _text(self.last.get("content")).lower()
        )


@dataclass(frozen=True)
class Match:
    """The rule that answers a request, and its answer with the placeholders filled in."""

    scenario: Scenario
    index: int
    respond: Respond

    @property
    def label(self) -> str:
        """`<scenario>#<rule number>`, as the journal shows it."""
        return f"{self.scenario.name}#{self.index + 1}"


def find_rule(scenarios: Iterable[Scenario], ctx: ChatContext) -> Match | None:
    """The first rule of the first scenario that matches and whose placeholders can be filled, if any."""
    for scenario in scenarios:
        for index, rule in enumerate(scenario.rules):
            if not ctx.matches(rule):
                continue
            try:
                respond = _Filler(scenario, ctx).respond(rule.respond)
            except _Unresolved:
                continue
            return Match(scenario, index, respond)
    return None


class _Filler:
    """Fills a rule's placeholders from one conversation: the goal and the tool results so far."""

    def __init__(self, scenario: Scenario, ctx: ChatContext) -> None:
        self.scenario = scenario
        self.ctx = ctx
        self._tools: dict[str, dict[str, Any]] | None = None

    @property
    def goal(self) -> str:
        first = next((m for m in self.ctx.messages if m.get("role") == "user"), None)
        return _text(first.get("content")) if first else ""

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        """The latest JSON-object result of each tool, by tool name."""
        if self._tools is None:
            names: dict[str, str] = {}
            results: dict[str, dict[str, Any]] = {}
            for message in self.ctx.messages:
                for call in message.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, Mapping) else None
                    if isinstance(function, Mapping) and call.get("id"):
                        names[str(call["id"])] = str(function.get("name", ""))
                if message.get("role") != "tool":
                    continue
                # Tool messages carry no name in the chat-completions API: their call id says which tool.
                name = message.get("name") or names.get(str(message.get("tool_call_id")))
                try:
                    value = json.loads(_text(message.get("content")))
                except ValueError:
                    continue  # "error: ..." and other text results hold no fields
                if name and isinstance(value, dict):
                    results[name] = value
            self._tools = results
        return self._tools

    def term(self, term: tuple[str, ...]) -> Any:
        if term[0] == "number":
            return float(term[1]) if "." in term[1] else int(term[1])
        if term[0] == "goal":
            return self.scenario.extract[term[1]].read(self.goal)
        value: Any = self.tools.get(term[1])
        for key in term[2:]:
            if not isinstance(value, Mapping) or key not in value:
                raise _Unresolved(".".join(term))
            value = value[key]
        return value

    def placeholder(self, body: str) -> Any:
        terms, spec = _parse_placeholder(body)
        values = [self.term(t) for t in terms]
        if len(values) == 1:
            value = values[0]
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            # Rounded so money sums to the cent: 250.5 + 873.0 + 0.1 is not 1123.6000000000001.
            value = round(sum(values), 6)
        else:
            value = "".join(str(v) for v in values)
        if not spec:
            return value
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            raise _Unresolved(body) from None

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            whole = _PLACEHOLDER.fullmatch(value.strip())
            if whole is not None:
                return self.placeholder(whole.group(1))
            return _PLACEHOLDER.sub(lambda m: str(self.placeholder(m.group(1))), value)
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def text(self, value: str | None) -> str | None:
        return None if value is None else _PLACEHOLDER.sub(lambda m: str(self.placeholder(m.group(1))), value)

    def respond(self, respond: Respond) -> Respond:
        """`respond` with every placeholder filled.

        Raises:
            _Unresolved: one cannot be filled from this conversation.
        """
        if not any("{{" in text for text in _respond_strings(respond)):
            return respond
        update: dict[str, Any] = {
            "content": self.text(respond.content),
            "message": self.text(respond.message),
            "tool_calls": [
                call.model_copy(
                    update={
                        "arguments": self.text(call.arguments)
                        if isinstance(call.arguments, str)
                        else self.value(call.arguments)
                    }
                )
                for call in respond.tool_calls
            ],
        }
        if "json_value" in respond.model_fields_set:
            update["json_value"] = self.value(respond.json_value)
        return respond.model_copy(update=update)


# --------------------------------------------------------------------------- answers


@dataclass
class Answer:
    """A completed answer, before it is shaped into the API's JSON."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    status: int | None = None
    error_message: str | None = None
    rule: str | None = None


def estimate_tokens(text: str) -> int:
    """About one token per four characters, at least 1."""
    return max(1, len(text) // 4)


def prompt_text(body: Mapping[str, Any]) -> str:
    """Everything in a request that counts as prompt: messages, their tool calls, the tool schemas."""
    chunks: list[str] = []
    for m in body.get("messages", []):
        if not isinstance(m, Mapping):
            continue
        chunks.append(_text(m.get("content")))
        for call in m.get("tool_calls") or []:
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                fn = call["function"]
                chunks.append(f"{fn.get('name', '')}{fn.get('arguments', '')}")
    if body.get("tools"):
        chunks.append(json.dumps(body["tools"], sort_keys=True))
    return "\n".join(chunks)


def _call_id(ctx: ChatContext, index: int, name: str) -> str:
    # Deterministic and unique within a conversation: the conversation so far differs at every turn.
    seed = json.dumps(
        [ctx.agent, len(ctx.messages), ctx.messages[-3:], index, name], sort_keys=True, default=str
    )
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def answer(scenarios: Iterable[Scenario], body: Mapping[str, Any], header_agent: str | None = None) -> Answer:
    """The provider's answer to a chat-completions request body (already validated)."""
    ctx = ChatContext.from_request(body, header_agent)
    prompt_tokens = estimate_tokens(prompt_text(body))
    found = find_rule(scenarios, ctx)
    if found is None:
        content = default_content(ctx)
        return Answer(content, [], "stop", prompt_tokens, estimate_tokens(content))
    respond = found.respond
    label = found.label
    if respond.status is not None:
        return Answer(
            None, [], "stop", 0, 0, status=respond.status, error_message=respond.message, rule=label
        )
    content = respond.content
    if "json_value" in respond.model_fields_set:
        content = json.dumps(respond.json_value, ensure_ascii=False)
    calls = [
        {
            "id": call.id or _call_id(ctx, i, call.name),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json()},
        }
        for i, call in enumerate(respond.tool_calls)
    ]
    completion_text = (content or "") + "".join(
        c["function"]["name"] + c["function"]["arguments"] for c in calls
    )
    usage = respond.usage or ScriptedUsage()
    return Answer(
        content=content,
        tool_calls=calls,
        finish_reason=respond.finish_reason or ("tool_calls" if calls else "stop"),
        prompt_tokens=usage.prompt_tokens if usage.prompt_tokens is not None else prompt_tokens,
        completion_tokens=(
            usage.completion_tokens
            if usage.completion_tokens is not None
            else estimate_tokens(completion_text)
        ),
        rule=label,
    )


def default_content(ctx: ChatContext) -> str:
    """The answer when no rule matches: minimal JSON for a JSON format, else `Done: ...`."""
    if ctx.response_schema is not None:
        return json.dumps(minimal_instance(ctx.response_schema), ensure_ascii=False)
    if ctx.json_mode:
        return "{}"
    last = next((m for m in reversed(ctx.messages) if m.get("role") in ("user", "tool")), None)
    quoted = " ".join(_text(last.get("content")).split())[:DEFAULT_TEXT_CHARS] if last else ""
    return f"Done: {quoted}" if quoted else "Done."


def minimal_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small JSON value that fits `schema`: required properties only, "", 0, false, first enum value.

    Handles `$ref` (local), `const`, `enum`, `default`, `anyOf`/`oneOf` (first non-null branch),
    `allOf` (merged), type lists, `minItems`, `minLength`, `minimum`/`exclusiveMinimum`.
    """
    root = schema if root is None else root
    if depth > 32 or not isinstance(schema, Mapping):
        return None if schema is False else {}
    if "$ref" in schema and isinstance(schema["$ref"], str):
        return minimal_instance(_resolve_ref(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            non_null = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
            return minimal_instance((non_null or branches)[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve_ref(root, part["$ref"]) if isinstance(part, Mapping) and "$ref" in part else part
            if isinstance(part, Mapping):
                merged.setdefault("properties", {}).update(part.get("properties", {}))
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                for k, v in part.items():
                    if k not in ("properties", "required"):
                        merged.setdefault(k, v)
        return minimal_instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else ("array" if "items" in schema else None)
    if kind == "object":
        props = schema.get("properties", {}) if isinstance(schema.get("properties"), Mapping) else {}
        return {
            name: minimal_instance(props.get(name, {}), root, depth + 1)
            for name in schema.get("required", [])
            if isinstance(name, str)
        }
    if kind == "array":
        count = int(schema.get("minItems", 0) or 0)
        items = schema.get("items", {})
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            values = [minimal_instance(p, root, depth + 1) for p in prefix]
            return values + [minimal_instance(items, root, depth + 1) for _ in range(count - len(values))]
        return [minimal_instance(items, root, depth + 1) for _ in range(count)]
    if kind == "string":
        sample = _FORMAT_SAMPLES.get(str(schema.get("format", "")), "")
        return sample or "x" * int(schema.get("minLength", 0) or 0)
    if kind in ("integer", "number"):
        return _minimal_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


_FORMAT_SAMPLES = {
    "date": "2000-01-01",
    "date-time": "2000-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
}
"""Values for string formats, where an empty string would not fit."""


def _minimal_number(schema: Mapping[str, Any], integer: bool) -> int | float:
    """0, moved into `[minimum, maximum]` (and past exclusive bounds) when 0 lies outside."""

    def bound(key: str) -> float | None:
        value = schema.get(key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    value: float = 0
    low, high = bound("minimum"), bound("maximum")
    low_x, high_x = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    if low is not None and value < low:
        value = low
    if low_x is not None and value <= low_x:
        value = low_x + 1
    if high is not None and value > high:
        value = high
    if high_x is not None and value >= high_x:
        value = high_x - 1
    return int(value) if integer or float(value).is_integer() else value


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    return node
