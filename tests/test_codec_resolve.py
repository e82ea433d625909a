"""The codec server reads conversation-store references back (Web UI, `temporal ... --codec-endpoint`)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import httpx
import pytest

from agentkeel.activities.conversation import ConversationLayer
from agentkeel.codec import build_codec, build_data_converter
from agentkeel.contracts import ChatMessage, LLMRequest, LLMResult, ToolCall, ToolResult
from agentkeel.conversation import ConversationRef
from agentkeel.dev.codec_resolve import ResolvingCodec
from agentkeel.dev.codec_server import CodecServer
from agentkeel.store import SqliteStore


async def _stored_turn(layer: ConversationLayer) -> tuple[LLMRequest, ToolResult]:
    """A first turn stored, then what the workflow sends for the second: a head and a stored tool result."""

    async def model(plain: LLMRequest) -> LLMResult:
        return LLMResult(content="I will search.", tool_calls=[ToolCall(id="c1", name="search")])

    first = LLMRequest(
        messages=[ChatMessage(role="user", content="find the cheapest flight")],
        correlation_id="corr",
        idempotency_key="k:1",
        agent="planner",
        conversation=ConversationRef(system="You plan trips."),
    )
    answered = await layer.call(first, "wf-ui", model)
    big = await layer.store_result(
        ToolResult(output={"flights": ["LH 123"] * 200}, summary="200 flights"), "wf-ui"
    )
    tool = ChatMessage(role="tool", tool_call_id="c1", name="search", content_ref=big.output_ref)
    second = first.model_copy(
        update={
            "messages": [tool],
            "conversation": ConversationRef(head=answered.head, prompt_ref=answered.prompt_ref),
        }
    )
    return second, big


@pytest.mark.unit
async def test_the_codec_server_shows_the_conversation_behind_the_references(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    layer = ConversationLayer(store)
    request, result = await _stored_turn(layer)
    converter = build_data_converter({})
    payloads = await converter.encode([request, result])
    raw = json.loads(payloads[0].data)
    assert "messages" not in raw["conversation"]  # history holds only the references
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }
    token = "tok-" + uuid.uuid4().hex
    server = CodecServer(ResolvingCodec(build_codec({}), layer), token, port=0)
    async with server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/decode", json=body, headers={"Authorization": f"Bearer {token}"})
    await store.aclose()
    assert response.status_code == 200, response.text
    shown = [json.loads(base64.b64decode(p["data"])) for p in response.json()["payloads"]]
    conversation = shown[0]["conversation"]
    assert conversation["system"] == "You plan trips."
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    assert conversation["messages"][1]["content"] == "I will search."
    assert json.loads(shown[0]["messages"][0]["content"]) == {"flights": ["LH 123"] * 200}
    assert shown[1]["output"] == {"flights": ["LH 123"] * 200}


@pytest.mark.unit
async def test_reclaimed_content_is_marked_not_fatal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    gone = ToolResult(output_ref="sha256:" + "0" * 64, output_bytes=10, summary="gone")
    (payload,) = await build_data_converter({}).encode([gone])
    (decoded,) = await ResolvingCodec(build_codec({}), ConversationLayer(store)).decode([payload])
    await store.aclose()
    shown = json.loads(decoded.data)
    assert shown["summary"] == "gone" and "not in the store" in shown["unresolved"]
