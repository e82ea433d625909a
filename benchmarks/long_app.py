"""The long-conversation benchmark's app: one agent calling a tool that returns 2 KB of random text.

    python -m benchmarks.bench_long        # starts a worker with `--app benchmarks.long_app`
    keel dev --app benchmarks.long_app     # or by hand: `keel start bench-long "... 10 tool turns"`

Written with the public API only (`@tool`, `Agent`, `Team`, `App`), so the same module runs on
the code before and after the conversation store (issue 13). The scripted model
(`long_scenario.yaml`) keeps its count in the conversation, not in the provider: it calls
`bench_payload(call=1, of=N)` first (N read from the goal, "... N tool turns"), then
`call = <the last result's call> + 1`, and answers once a result says `"done": true`. So the
run makes exactly N tool calls even when the workflow drops old messages, and the model's last
request shows how much of the conversation it was given.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import random
from pathlib import Path
from typing import Any

from agentkeel import Agent, App, Team, tool, tool_context
from agentkeel.contracts import AgentSpec

PAYLOAD_TOOL = "bench_payload"
PAYLOAD_CHARS = 2048
"""Characters of random text per tool result: base64url of 1,536 random bytes, 6 bits each."""
AGENT = "longtalker"
TEAM = "bench-long"
MAX_TURNS = 1_100
"""The registered team's limit; the benchmark starts each run with N + 2."""
SCENARIO_FILE = Path(__file__).resolve().parent / "long_scenario.yaml"
DONE_MARK = '"done": true'
"""What the scripted model looks for in the last tool message (the tool's JSON, keys sorted)."""


def goal(turns: int) -> str:
    """The goal of a run of `turns` tool turns (the scenario reads the number from it)."""
    return f"Benchmark: a long conversation of {turns} tool turns. Call {PAYLOAD_TOOL} until it says done."


def random_text(seed: str, chars: int = PAYLOAD_CHARS) -> str:
    """`chars` characters of random text drawn from `seed`: incompressible and never repeated
    across seeds (the same seed, a retried call, gives the same text)."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    return base64.urlsafe_b64encode(rng.randbytes(chars * 3 // 4 + 3)).decode()[:chars]


@tool
async def bench_payload(call: int, of: int) -> dict[str, Any]:
    """Return the next page of a long document: 2 KB of text, and whether it was the last page."""
    return {"call": call, "of": of, "done": call >= of, "text": random_text(tool_context().idempotency_key)}


def _keep_all() -> dict[str, Any]:
    """`Agent` arguments asking for `context: keep_all` where the code under test has context
    policies (issue 13), else none: the same app runs on the code before them."""
    policy = {"strategy": "keep_all"}
    if "context" in {f.name for f in dataclasses.fields(Agent)}:
        return {"context": policy}
    if "context" not in AgentSpec.model_fields:
        return {}
    try:
        AgentSpec(name=AGENT, instructions="x", context=policy)
    except ValueError:
        return {}
    return {"extra": {"context": policy}}


talker = Agent(
    name=AGENT,
    instructions=f"You are a benchmark agent. Call {PAYLOAD_TOOL} on every turn until it says done.",
    tools=[bench_payload],
    **_keep_all(),
)
team = Team(name=TEAM, entry=talker, agents=[talker], max_turns=MAX_TURNS, max_tool_errors=0)
app = App(name="bench-long", teams=[team], scenarios=[SCENARIO_FILE])
