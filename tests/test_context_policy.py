"""Context policies and the worker's store layer: what the model is sent, what is stored, what is said."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agentkeel import Agent, App, Team, tool
from agentkeel.activities import context_policy
from agentkeel.activities.conversation import INLINE_RESULT_BYTES, ConversationLayer
from agentkeel.contracts import (
    ChatMessage,
    CompensationRequest,
    LLMRequest,
    LLMResult,
    ToolCall,
    ToolResult,
    ToolSchema,
)
from agentkeel.conversation import ContextPolicy, ConversationRef
from agentkeel.names import SUMMARIZE_AGENT_SUFFIX
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.store import SqliteStore
from agentkeel.testing import Reply, ScriptedModel, answer, call, keel_test_env

OWNER = "wf-1"


def msg(role: str, text: str, **kw: object) -> ChatMessage:
    return ChatMessage(role=role, content=text, **kw)  # type: ignore[arg-type]


def conversation(turns: int, size: int = 400) -> list[ChatMessage]:
    messages = [msg("user", "the goal")]
    for i in range(turns):
        messages.append(ChatMessage(role="assistant", tool_calls=[ToolCall(id=f"c{i}", name="t")]))
        messages.append(msg("tool", f"{i}:" + "x" * size, tool_call_id=f"c{i}", name="t"))
    return messages


def test_keep_all_sends_everything_whatever_the_budget():
    messages = conversation(50)
    chosen = context_policy.select(messages, ContextPolicy(max_tokens=100, strategy="keep_all"))
    assert chosen.messages == messages and chosen.left_out == 0


def test_truncate_oldest_keeps_the_goal_says_what_it_left_out_and_fits():
    messages = conversation(50)
    chosen = context_policy.select(messages, ContextPolicy(max_tokens=1000, strategy="truncate_oldest"))
    assert chosen.messages[0] == messages[0]
    assert f"{chosen.left_out} earlier messages" in (chosen.messages[1].content or "")
    assert chosen.messages[2].role != "tool"  # never a tool result without its call
    assert chosen.messages[-1] == messages[-1]
    assert chosen.tokens <= 1000
    assert len(chosen.messages) - 2 + chosen.left_out == len(messages) - 1


def test_a_summary_stands_for_the_oldest_messages_and_the_newest_stay_whole():
    messages = conversation(50)
    policy = ContextPolicy(max_tokens=2000, strategy="summarize")
    covers = context_policy.summary_span(messages, policy, None)
    assert 1 < covers < len(messages)
    prompt = context_policy.summarize_prompt(messages, covers, None, "")
    assert prompt[0].content == context_policy.SUMMARIZE_INSTRUCTIONS
    assert f"Messages 2-{covers}:" in (prompt[1].content or "")


@pytest.fixture
async def layer(tmp_path: Path):
    store = SqliteStore(tmp_path / "store.db")
    yield ConversationLayer(store)
    await store.aclose()


def request(messages: list[ChatMessage], ref: ConversationRef, step: int = 1) -> LLMRequest:
    return LLMRequest(
        messages=messages,
        tools=[ToolSchema(name="t")] if ref.prompt_ref is None else [],
        correlation_id="c",
        idempotency_key=f"k:{step}",
        agent="a",
        conversation=ref,
    )


async def test_the_layer_stores_each_turn_and_gives_the_model_the_whole_conversation(layer):
    seen: list[LLMRequest] = []

    async def model(plain: LLMRequest) -> LLMResult:
        seen.append(plain)
        return LLMResult(content="thinking " * 100, tool_calls=[ToolCall(id=f"c{len(seen)}", name="t")])

    first = await layer.call(request([msg("user", "goal")], ConversationRef(system="be brief")), OWNER, model)
    assert first.head and first.prompt_ref and first.context and first.context.messages == 2
    assert len(first.content or "") < 200  # the whole answer is stored; history gets a preview
    tool_msg = msg("tool", "result", tool_call_id="c1", name="t")
    second = await layer.call(
        request([tool_msg], ConversationRef(head=first.head, prompt_ref=first.prompt_ref), 2), OWNER, model
    )
    assert second.prompt_ref is None  # sent once; the workflow keeps it
    assert [m.role for m in seen[1].messages] == ["system", "user", "assistant", "tool"]
    assert seen[1].messages[0].content == "be brief" and seen[1].tools == [ToolSchema(name="t")]
    assert seen[1].messages[2].content == "thinking " * 100
    # A fresh layer (another worker) reads the same conversation from the store.
    again = await ConversationLayer(layer.store).read(second.head)
    assert [m.role for m in again] == ["user", "assistant", "tool", "assistant"]


async def test_large_tool_results_are_stored_and_compensations_get_them_back(layer):
    small = ToolResult(output={"ok": True}, summary="ok")
    assert await layer.store_result(small, OWNER) == small
    big_output = {"text": "y" * (INLINE_RESULT_BYTES + 1)}
    big = await layer.store_result(ToolResult(output=big_output, summary="yyy"), OWNER)
    assert big.output == {} and big.output_ref and big.output_bytes > INLINE_RESULT_BYTES
    comp = CompensationRequest(idempotency_key="k", correlation_id="c", tool="t", result_ref=big.output_ref)
    assert (await layer.resolve_compensation(comp)).result == big_output
    stored = msg("tool", None, tool_call_id="c1", name="t").model_copy(update={"content_ref": big.output_ref})
    (resolved,) = await layer.resolve([stored])
    assert json.loads(resolved.content or "") == big_output


async def test_summarize_stores_a_summary_that_later_turns_send_in_place_of_the_old_messages(layer):
    seen: list[LLMRequest] = []

    async def model(plain: LLMRequest) -> LLMResult:
        seen.append(plain)
        if (plain.agent or "").endswith(SUMMARIZE_AGENT_SUFFIX):
            return LLMResult(content="SUMMARY: pages 1-40 read")
        return LLMResult(content="next", tool_calls=[ToolCall(id="x", name="t")])

    policy = ContextPolicy(max_tokens=3000, strategy="summarize")
    first = await layer.call(
        request(conversation(40), ConversationRef(system="s", policy=policy)), OWNER, model
    )
    ref = ConversationRef(head=first.head, prompt_ref=first.prompt_ref, policy=policy, purpose="summarize")
    summarized = await layer.call(request([], ref), OWNER, model)
    summary = summarized.context.summary if summarized.context else None
    assert summary is not None and summary.covers > 2
    assert summarized.head == first.head  # a summary adds nothing to the conversation itself
    turn = ref.model_copy(update={"purpose": "turn", "summary": summary})
    result = await layer.call(request([], turn), OWNER, model)
    sent = seen[-1].messages
    assert sent[1].content == "the goal" and "SUMMARY: pages 1-40 read" in (sent[2].content or "")
    assert result.context and result.context.left_out == summary.covers - 1


# ---------------------------------------------------------------- a run with each policy


@tool
async def read_page(page: int) -> str:
    """Read one page."""
    return f"page {page}: " + "z" * 1500


def script(request: LLMRequest) -> Reply:
    # The number of tool results sent tells the turn only with keep_all; count pages instead.
    results = [json.loads(m.content or "{}").get("result", "") for m in request.messages if m.role == "tool"]
    page = max((int(text[5:].split(":")[0]) for text in results), default=0) + 1
    return call("read_page", page=page) if page <= 12 else answer("read")


def team(strategy: str) -> Team:
    reader = Agent(
        name="reader",
        instructions="Read the pages.",
        tools=[read_page],
        context={"max_tokens": 2500, "strategy": strategy},
    )
    return Team(name=f"pages-{strategy.replace('_', '-')}", entry=reader, agents=[reader], max_turns=20)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("strategy", ["truncate_oldest", "summarize"])
async def test_a_policy_that_leaves_messages_out_says_so_in_the_transcript(time_env, tmp_path, strategy):
    the_team = team(strategy)
    model = ScriptedModel(script)
    app = App(name="pages", tools=[read_page], teams=[the_team])
    settings = Settings(home=tmp_path / "home")
    async with keel_test_env(app, model, env=time_env, settings=settings) as env:
        handle = await env.start(the_team, "Read twelve pages.")
        result = await handle.result()
        transcript = await handle.query("transcript")
    assert result.status == SagaStatus.COMPLETED, result.reason
    notes = [e["content"] for e in transcript if e["kind"] == "note"]
    assert any(f"context policy {strategy}" in n or "context policy summarize" in n for n in notes), notes
    for note in notes:  # the counts add up: sent + left out = the conversation so far
        counted = re.search(r"was sent (\d+) of the (\d+) messages so far \((.*)\)", note)
        if counted:
            left = sum(int(n) for n in re.findall(r"\d+", counted.group(3)))
            assert int(counted.group(1)) + left == int(counted.group(2)), note
    assert len(model.requests) == 13  # every page once: the newest results are always sent
    assert max(len(r.messages) for r in model.requests) < 2 + 2 * 12  # the model was not sent everything
    if strategy == "summarize":
        assert model.summarize_requests, "no summary was written"
        assert any("summary of" in (m.content or "") for r in model.requests for m in r.messages)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_run_continued_from_one_before_the_store_keeps_its_messages(time_env, tmp_path):
    # Continue-as-new input written by an earlier version: the conversation inline, compacted.
    from agentkeel.contracts import SagaCheckpoint, SagaRequest
    from agentkeel.workflows.agent_saga import AgentSagaWorkflow

    the_team = team("truncate_oldest")
    carried = [
        msg("user", "Read twelve pages."),
        ChatMessage(
            role="assistant", tool_calls=[ToolCall(id="c1", name="read_page", arguments='{"page": 1}')]
        ),
        msg("tool", json.dumps({"result": "page 1: old"}), tool_call_id="c1", name="read_page"),
    ]
    checkpoint = SagaCheckpoint(
        team=the_team.spec, correlation_id="corr", active_agent="reader", messages=carried, runs=2, turns=1
    )
    model = ScriptedModel(lambda request: answer("done"))
    app = App(name="pages", tools=[read_page], teams=[the_team])
    async with keel_test_env(app, model, env=time_env, settings=Settings(home=tmp_path / "home")) as env:
        handle = await env.client.start_workflow(
            AgentSagaWorkflow.run,
            SagaRequest(goal="Read twelve pages.", team=the_team.spec, checkpoint=checkpoint),
            id=f"test-{tmp_path.name}",
            task_queue=env.task_queue,
        )
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED
    (first,) = model.requests
    assert [m.content for m in first.messages[1:]] == [m.content for m in carried]


async def test_the_layer_keeps_recent_conversations_within_its_bound(layer, monkeypatch):
    from agentkeel.activities import conversation as module

    monkeypatch.setattr(module, "RECENT_CHARS", 10_000)
    head = None
    for i in range(40):
        resolved = await layer._append(head, [msg("user", f"{i:02}" + "w" * 98)], OWNER)
        head = resolved.head
    assert layer._recent_chars <= 10_000 and len(layer._recent) >= 1
    # What was evicted is read back from the store, whole.
    fresh = ConversationLayer(layer.store)
    assert len(await fresh.read(head)) == 40
