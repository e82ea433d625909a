"""Tools as typed Python functions: `@tool` makes the JSON schema, the activity and the compensation.

    from agentkeel import tool, tool_context

    @tool(requires_review="amount_usd > 500")
    async def issue_refund(order_id: str, amount_usd: float) -> dict:
        '''Refund an order.'''
        refund = await payments.refund(order_id, amount_usd, key=tool_context().idempotency_key)
        return {"refund_id": refund.id}

    @issue_refund.compensate
    async def void_refund(order_id: str, amount_usd: float, *, idempotency_key: str, result: dict | None):
        await payments.void(key=idempotency_key)

The parameters (plain annotated types, or one pydantic model) become the JSON schema the
model is offered and the arguments are validated against; the docstring's first paragraph
is the description. Whatever the function returns (a model, a dict, a string, a number,
None) becomes a `ToolResult`; arguments that do not fit come back to the model as a tool
error; a value that cannot be serialized fails the step with a clear message. Sync
functions run on the worker's tool thread pool, never on its event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import inspect
import json
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.contracts import CompensationRequest, ToolRequest, ToolResult, ToolSpec
from agentkeel.review_conditions import ReviewCondition, parse_condition, review_check_name
from agentkeel.validation import format_validation_error

RESERVED_PARAMETERS = ("idempotency_key", "result")
"""Keyword-only parameters a compensation may declare to receive the key and the tool's result."""
SUMMARY_CHARS = 120


@dataclass(frozen=True)
class ToolContext:
    """What a running tool or compensation knows about its call (see `tool_context()`).

    Attributes:
        idempotency_key: Unique to one saga execution and step: do the side effect at most once per key.
        correlation_id: The run's correlation id (put it on outbound requests and log lines).
        workflow_id: The run's workflow id.
        step: The step number within the run.
        agent: The agent that called the tool ("" for a compensation).
        result: For a compensation: the tool's result, or None when it was lost in a crash.
    """

    idempotency_key: str
    correlation_id: str
    workflow_id: str = ""
    step: int = 0
    agent: str = ""
    result: dict[str, Any] | None = None


_CONTEXT: contextvars.ContextVar[ToolContext | None] = contextvars.ContextVar("agentkeel_tool", default=None)


def tool_context() -> ToolContext:
    """The context of the tool or compensation running now.

    Raises:
        RuntimeError: Called outside a tool.
    """
    context = _CONTEXT.get()
    if context is None:
        raise RuntimeError("tool_context() is only available while a tool or compensation runs")
    return context


@contextmanager
def using_tool_context(context: ToolContext) -> Iterator[ToolContext]:
    """Run code (a unit test of a tool, say) as if inside a tool call with `context`."""
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


# --------------------------------------------------------------------------- the sync tool pool

_POOL: ThreadPoolExecutor | None = None


def sync_tool_pool(max_workers: int | None = None) -> ThreadPoolExecutor:
    """The thread pool sync tools run on (created on first use; `AgentkeelPlugin` sizes it)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max_workers or 32, thread_name_prefix="keel-tool")
    return _POOL


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    # A copy of the context carries the tool context and the log fields into the thread.
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(sync_tool_pool(), call)


# --------------------------------------------------------------------------- signatures and results


def _description(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return textwrap.dedent(doc.split("\n\n", 1)[0]).strip().replace("\n", " ")


def _strip_titles(schema: Any) -> Any:
    # Pydantic adds a "title" to every property; models read the property names already.
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


@dataclass(frozen=True)
class _Signature:
    model: type[BaseModel]
    single_model: bool
    """The function takes one pydantic model: arguments are passed as that model."""
    names: tuple[str, ...]
    wants: frozenset[str]
    """Reserved keyword-only parameters the function declares (compensations)."""

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> _Signature:
        sig = inspect.signature(fn)
        hints = get_type_hints(fn, include_extras=True)
        fields: dict[str, Any] = {}
        wants: set[str] = set()
        for name, param in sig.parameters.items():
            if name in ("self", "cls"):
                continue
            if param.kind is inspect.Parameter.KEYWORD_ONLY and name in RESERVED_PARAMETERS:
                wants.add(name)
                continue
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"tool {fn.__name__}: *args and **kwargs cannot become a JSON schema")
            if name not in hints:
                raise TypeError(f"tool {fn.__name__}: parameter {name!r} needs a type annotation")
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[name] = (hints[name], default)
        if len(fields) == 1:
            ((only, (annotation, _)),) = fields.items()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                return cls(annotation, True, (only,), frozenset(wants))
        model = create_model(  # type: ignore[call-overload]
            f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        return cls(model, False, tuple(fields), frozenset(wants))

    def schema(self) -> dict[str, Any]:
        schema = _strip_titles(self.model.model_json_schema())
        schema.setdefault("properties", {})
        schema["type"] = "object"
        return schema

    def lenient_arguments(self, arguments: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """For a compensation: the original call's arguments, as given (a missing one is None).

        A compensation must run whatever it is handed (it undoes by idempotency key), so it is
        never refused for its arguments: the platform passes the validated ones; a hand-written
        saga may pass fewer.
        """
        try:
            return self.call_arguments(arguments, "")
        except ApplicationError:
            if self.single_model:
                return (self.model.model_construct(**arguments),), {}
            return (), {name: arguments.get(name) for name in self.names}

    def call_arguments(self, arguments: dict[str, Any], tool: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        try:
            parsed = self.model.model_validate(arguments)
        except ValidationError as exc:
            raise ApplicationError(
                f"invalid arguments for {tool}: {format_validation_error(exc)}",
                type=errors.TOOL_INVALID_ARGUMENTS,
                non_retryable=True,
            ) from None
        if self.single_model:
            return (parsed,), {}
        return (), {name: getattr(parsed, name) for name in self.names}


def to_tool_result(value: Any, tool: str) -> ToolResult:
    """Whatever a tool returned, as a `ToolResult` the workflow can always decode.

    Raises:
        ApplicationError: `ToolFailed` (non-retryable) when the value cannot be serialized as JSON.
    """
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, BaseModel):
        output: Any = value.model_dump(mode="json")
    else:
        output = value
    if not isinstance(output, dict):
        output = {} if output is None else {"result": output}
    try:
        # What goes back to the model and into history must be plain JSON: checked here, in the
        # activity, because a result the workflow cannot decode would fail its task in a loop.
        text = json.dumps(output, sort_keys=True, allow_nan=False)
        output = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ApplicationError(
            f"tool {tool} returned a value that cannot be serialized as JSON: {exc}",
            type=errors.TOOL_FAILED,
            non_retryable=True,
        ) from None
    summary = value if isinstance(value, str) else text
    return ToolResult(output=output, summary=summary[:SUMMARY_CHARS])


# --------------------------------------------------------------------------- the decorator


class Tool:
    """A tool made by `@tool`: its spec, its activity, and its compensation.

    Calling the object calls the function itself (for unit tests).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_review: bool | str | Callable[..., bool] = False,
        compensation: Tool | None = None,
        timeout_s: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description if description is not None else _description(fn)
        self.signature = _Signature.of(fn)
        self.review: bool | ReviewCondition | Callable[..., bool] = (
            parse_condition(requires_review) if isinstance(requires_review, str) else requires_review
        )
        self.compensation: Tool | None = None
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._is_compensation = False
        params = list(inspect.signature(fn).parameters)
        self.is_method = bool(params) and params[0] == "self" and not inspect.ismethod(fn)
        """Defined in a class: used from an instance, whose methods own the clients (a database...)."""
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        if compensation is not None:
            self.compensate(compensation)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Tool:
        """`obj.book_flight` is the tool bound to `obj` (its compensation too), made once per object."""
        if instance is None or not self.is_method:
            return self
        bound = copy.copy(self)
        bound.fn = self.fn.__get__(instance, owner)
        bound.is_method = False
        if self.compensation is not None:
            bound.compensation = self.compensation.__get__(instance, owner)
        instance.__dict__[self.fn.__name__] = bound  # later lookups skip this method
        return bound

    def __repr__(self) -> str:
        return f"<agentkeel tool {self.name}>"

    @property
    def is_compensation(self) -> bool:
        """This tool undoes another one (it is registered with that one)."""
        return self._is_compensation

    def compensate(self, other: Tool | Callable[..., Any]) -> Tool:
        """Declare what undoes this tool (usable as a decorator); returns the compensation `Tool`."""
        comp = other if isinstance(other, Tool) else Tool(other)
        comp._is_compensation = True
        self.compensation = comp
        return comp

    @property
    def spec(self) -> ToolSpec:
        """The `ToolSpec` a team lists (the same as a YAML team would hold)."""
        review = self.review
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=self.signature.schema(),
            compensation=self.compensation.name if self.compensation else None,
            requires_review=review is True,
            review_when=review.text if isinstance(review, ReviewCondition) else None,
            review_check=review_check_name(self.name)
            if callable(review) and not isinstance(review, ReviewCondition)
            else None,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
        )

    def activities(self) -> list[Callable[..., Any]]:
        """The Temporal activities: the tool, its compensation, and its review check when it has one.

        Raises:
            TypeError: The tool is a method taken from its class, not from an instance.
        """
        if self.is_method:
            raise TypeError(f"tool {self.name} is a method: register it from an instance (obj.{self.name})")
        acts = [self._tool_activity()]
        if self.compensation is not None:
            acts.append(self.compensation._compensation_activity(self))
        if callable(self.review) and not isinstance(self.review, ReviewCondition):
            from agentkeel.review_conditions import review_check_activity

            acts.append(review_check_activity(self.name, self.signature.call_arguments, self.review))
        return acts

    def _tool_activity(self) -> Callable[..., Any]:
        tool = self

        @activity.defn(name=self.name)
        async def run_tool(request: ToolRequest) -> ToolResult:
            args, kwargs = tool.signature.call_arguments(request.arguments, tool.name)
            context = ToolContext(
                idempotency_key=request.idempotency_key,
                correlation_id=request.correlation_id,
                workflow_id=request.workflow_id or activity.info().workflow_id or "",
                step=request.step,
                agent=request.agent,
            )
            with using_tool_context(context):
                value = await _call(tool.fn, *args, **kwargs)
            return to_tool_result(value, tool.name)

        return run_tool

    def _compensation_activity(self, undoes: Tool) -> Callable[..., Any]:
        comp = self

        @activity.defn(name=self.name)
        async def run_compensation(request: CompensationRequest) -> ToolResult:
            args, kwargs = undoes.signature.lenient_arguments(request.arguments)
            # `result` is None when the tool's result was lost (the worker died after the side
            # effect): the compensation then finds the effect by its idempotency key.
            result = request.result or None
            if "idempotency_key" in comp.signature.wants:
                kwargs["idempotency_key"] = request.idempotency_key
            if "result" in comp.signature.wants:
                kwargs["result"] = result
            context = ToolContext(
                idempotency_key=request.idempotency_key,
                correlation_id=request.correlation_id,
                result=result,
            )
            with using_tool_context(context):
                value = await _call(comp.fn, *args, **kwargs)
            return to_tool_result(value, comp.name)

        return run_compensation


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_review: bool | str | Callable[..., bool] = False,
    compensation: Tool | None = None,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> Any:
    """Make a tool of a typed function (sync or async); see the module docstring.

    Args:
        fn: The function (when used as `@tool` without parentheses).
        name: The tool's (and activity's) name; default the function's name.
        description: Told to the model; default the docstring's first paragraph.
        requires_review: True, a condition on the arguments (`"amount_usd > 500"`), or a predicate
            taking the same arguments and returning whether a person must approve this call.
        compensation: A `Tool` (or use `@this_tool.compensate`) receiving the same arguments, and
            `idempotency_key` / `result` when it declares them keyword-only.
        timeout_s: Start-to-close timeout of one attempt (default 60 s).
        max_attempts: Attempts before the step fails and the saga compensates (default 6).
    """

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            requires_review=requires_review,
            compensation=compensation,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
        )

    return make(fn) if fn is not None else make
