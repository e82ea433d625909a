"""The teams the benchmark runs, and the offline provider's scenario that drives them.

Two shapes:

* **chain of N agents** (`chain_team`): agent `cNa1` hands off to `cNa2`, ...
  `cNaN` answers. Each agent makes exactly one LLM call, and a handoff runs no
  activity, so a saga of N LLM steps runs exactly N activities (N `call_llm`),
  the same count as the bare workflow of N no-op activities it is compared to.
* **one long conversation** (`talker_team`): one agent calls the no-op tool
  `bench_noop` on turns 1..T-1 and answers on turn T, so the conversation (and
  each LLM request) grows by two messages per turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from temporalio import activity

from agentkeel.contracts import (
    AgentSpec,
    LLMRequest,
    LLMResult,
    TeamSpec,
    ToolCall,
    ToolRequest,
    ToolResult,
    ToolSpec,
)
from agentkeel.names import CALL_LLM_ACTIVITY

NOOP_TOOL = "bench_noop"
TALKER = "talker"
TALK_TEXT = "Still working: I checked the previous result and will run the next step now."
"""What the talker says beside each tool call, so assistant messages carry some text, as real ones do."""


@activity.defn(name=NOOP_TOOL)
async def bench_noop(request: ToolRequest) -> ToolResult:
    """A tool with no side effect: returns an empty result at once."""
    return ToolResult()


@activity.defn(name=CALL_LLM_ACTIVITY)
async def stub_call_llm(request: LLMRequest) -> LLMResult:
    """A `call_llm` double for chain agents (`cNai`): hands off to the next agent, the last one answers.

    Used only to split the saga's cost between the workflow and the real LLM activity.
    """
    length, _, index = (request.agent or "c1a1").removeprefix("c").partition("a")
    if int(index) < int(length):
        target = agent_name(int(length), int(index) + 1)
        call = ToolCall(id=f"call_{index}", name=f"transfer_to_{target}", arguments="{}")
        return LLMResult(tool_calls=[call], finish_reason="tool_calls", provider="stub", model="stub")
    return LLMResult(content="done", provider="stub", model="stub")


def agent_name(length: int, index: int) -> str:
    """Name of agent number `index` (1-based) of the chain of `length` agents."""
    return f"c{length}a{index}"


def chain_team(steps: int) -> TeamSpec:
    """A team of `steps` agents, each handing off to the next; the last one answers."""
    agents = [
        AgentSpec(
            name=agent_name(steps, i),
            instructions=f"You are agent {agent_name(steps, i)} of a benchmark chain.",
            handoffs=[agent_name(steps, i + 1)] if i < steps else [],
        )
        for i in range(1, steps + 1)
    ]
    return TeamSpec(
        name=f"bench-chain-{steps}",
        agents=agents,
        entry=agent_name(steps, 1),
        max_turns=steps + 1,
        max_handoffs=steps,
    )


def talker_team(turns: int) -> TeamSpec:
    """One agent with the no-op tool, answering on turn `turns`."""
    return TeamSpec(
        name=f"bench-talk-{turns}",
        agents=[
            AgentSpec(
                name=TALKER, instructions="You are a benchmark agent. Call bench_noop.", tools=[NOOP_TOOL]
            )
        ],
        tools=[ToolSpec(name=NOOP_TOOL, description="Does nothing.")],
        entry=TALKER,
        max_turns=turns,
        max_tool_errors=0,
    )


def scenario(chain_lengths: tuple[int, ...], talk_turns: int) -> dict[str, Any]:
    """The scenario answering every chain length in `chain_lengths` and a talker of `talk_turns` turns.

    Chain agents are named per chain length (`c4a1`..`c4a4`), so one rule per
    agent says whether it hands off or answers.
    """
    rules: list[dict[str, Any]] = []
    for length in sorted(set(chain_lengths)):
        for i in range(1, length + 1):
            respond: dict[str, Any] = (
                {"tool_calls": [{"name": f"transfer_to_{agent_name(length, i + 1)}", "arguments": {}}]}
                if i < length
                else {"content": "done"}
            )
            rules.append({"agent": agent_name(length, i), "turn": 1, "respond": respond})
    rules.append({"agent": TALKER, "turn": talk_turns, "respond": {"content": "All steps are done."}})
    rules.append(
        {
            "agent": TALKER,
            "respond": {"content": TALK_TEXT, "tool_calls": [{"name": NOOP_TOOL, "arguments": {}}]},
        }
    )
    return {"name": "bench", "rules": rules}


def write_scenario(folder: Path, chain_lengths: tuple[int, ...], talk_turns: int) -> Path:
    """Write the benchmark's scenario file into `folder` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(scenario(chain_lengths, talk_turns), sort_keys=False))
    return path
