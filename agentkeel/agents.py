"""Teams in Python with typed references: `Team` and `Agent` build the same `TeamSpec` as YAML.

    hotels = Agent(name="hotels", instructions="Book the hotel.", tools=[book_hotel])
    planner = Agent(
        name="planner", instructions="Plan the trip.", tools=[charge_card], handoffs=[hotels]
    )
    support = Team(name="support", entry=planner, agents=[planner, hotels], review={"timeout_s": 3600})

Tools are `@tool` objects and handoffs are `Agent` objects (or names, for agents defined
later): the team is validated when `Team(...)` runs, so a typo is an error at import
time, not in the middle of a run. `Team.spec` is the `TeamSpec`; `App(teams=[team])`
registers it by name, and YAML/JSON teams may name the same Python tools by their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentkeel.contracts import AgentSpec, Budget, ReviewPolicy, TeamSpec, ToolSpec
from agentkeel.conversation import ContextPolicy
from agentkeel.mcp.contracts import MCPAccess, MCPServerSpec
from agentkeel.tools import Tool


@dataclass
class Agent:
    """An agent of a team.

    Attributes:
        name: Unique within the team.
        instructions: The system prompt.
        model: Model alias from `keel.toml` (`[models.ALIAS]`).
        tools: `@tool` objects (or the names of tools a YAML team lists).
        handoffs: Agents it may transfer to: `Agent` objects, or names of agents of the team.
        output_schema: When set, the final answer must be JSON fitting this schema.
        context: What the model is sent of the conversation: a `ContextPolicy` or its fields
            (`{"max_tokens": 8000, "strategy": "summarize"}`); default every message.
        extra: Extra `AgentSpec` fields (temperature, max_tokens...).
        mcp: MCP servers whose tools it may call (`MCPServer`s, names, or `MCPAccess` filters).
    """

    name: str
    instructions: str
    model: str = "default"
    tools: Sequence[Tool | str] = ()
    handoffs: Sequence[Agent | str] = ()
    output_schema: dict[str, Any] | None = None
    context: ContextPolicy | dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    mcp: Sequence[MCPServerSpec | MCPAccess | str] = ()

    def spec(self) -> AgentSpec:
        """The `AgentSpec`."""
        return AgentSpec(
            name=self.name,
            instructions=self.instructions,
            model=self.model,
            tools=[t.name if isinstance(t, Tool) else t for t in self.tools],
            handoffs=[a.name if isinstance(a, Agent) else a for a in self.handoffs],
            output_schema=self.output_schema,
            context=ContextPolicy.model_validate(self.context) if self.context is not None else None,
            mcp=[MCPAccess(server=m.name) if isinstance(m, MCPServerSpec) else m for m in self.mcp],
            **self.extra,
        )


class Team:
    """A team of agents; validated when built (see the module docstring).

    Args:
        name: The team's name (`keel start NAME ...`).
        entry: The agent that starts (an `Agent` or its name).
        agents: Every agent of the team.
        tools: More tools than the agents list (rarely needed: agents' tools are collected).
        review: A `ReviewPolicy` or its fields.
        budget: A `Budget` or its fields.
        **settings: Other `TeamSpec` fields (`max_turns`, `max_handoffs`, `description`, `mcp_servers`,
            `mcp_policy`...).

    Raises:
        ValueError: The team is inconsistent (unknown handoff, duplicate names, a tool listed by name
            that no agent brings as an object and the team does not declare...).
    """

    def __init__(
        self,
        *,
        name: str,
        entry: Agent | str,
        agents: Sequence[Agent],
        tools: Sequence[Tool] = (),
        review: ReviewPolicy | dict[str, Any] | None = None,
        budget: Budget | dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.name = name
        self.agents = list(agents)
        self.tools: dict[str, Tool] = {}
        for t in [*tools, *(t for a in self.agents for t in a.tools if isinstance(t, Tool))]:
            known = self.tools.get(t.name)
            if known is not None and known is not t:
                raise ValueError(f"team {name!r}: two different tools are named {t.name!r}")
            self.tools[t.name] = t
        specs: list[ToolSpec] = [t.spec for t in self.tools.values()]
        self.spec = TeamSpec(
            name=name,
            entry=entry.name if isinstance(entry, Agent) else entry,
            agents=[a.spec() for a in self.agents],
            tools=specs,
            review=ReviewPolicy.model_validate(review or {})
            if not isinstance(review, ReviewPolicy)
            else review,
            budget=Budget.model_validate(budget or {}) if not isinstance(budget, Budget) else budget,
            **settings,
        )

    def __repr__(self) -> str:
        return f"<agentkeel Team {self.name}: {', '.join(a.name for a in self.agents)}>"

    def activities(self) -> list[Any]:
        """Every activity of the team's tools (tools, compensations, review checks)."""
        return [act for t in self.tools.values() if not t.is_method for act in t.activities()]
