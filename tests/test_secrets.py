"""Secrets come from the environment only, and reach no log line and no workflow history.

A recognisable fake API key and an encryption key are planted in the environment;
a workflow makes a real `call_llm` activity call (through the OpenAI client, over
HTTP, to the offline provider, which therefore receives the key); then every log
line (our handler at DEBUG, pytest's capture of stdlib records, stdout/stderr, the
provider's own log) and the whole history, raw and decrypted, are searched for it.
"""

from __future__ import annotations

import base64
import io
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from google.protobuf.message import Message
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agentkeel.codec import build_codec, build_data_converter
from agentkeel.contracts import ChatMessage, LLMRequest, LLMResult
from agentkeel.logs import configure_logging
from agentkeel.settings import ConfigError, load_settings
from agentkeel.temporal import connect


def _secret_forms(value: str) -> list[bytes]:
    """The ways a secret could be written down: whole, any 12 characters of it (a partial dump), base64."""
    raw = value.encode()
    windows = [raw[i : i + 12] for i in range(len(raw) - 11)] if len(raw) > 12 else [raw]
    # Skip windows made only of the recognisable public prefix ("sk-keeltest-"): it is not the secret.
    windows = [w for w in windows if not value.startswith(w.decode())] or [raw]
    return [raw, *windows, base64.b64encode(raw)[:24], base64.urlsafe_b64encode(raw)[:24]]


def _assert_absent(haystack: bytes | str, secrets: dict[str, str], where: str) -> None:
    data = haystack.encode() if isinstance(haystack, str) else haystack
    forms = {name: _secret_forms(value) for name, value in secrets.items()}
    key = secrets.get("KEEL_ENCRYPTION_KEY")
    if key:  # the key's bytes themselves, and their base64, as a careless dump would show them
        key_bytes = bytes.fromhex(key)
        forms["KEEL_ENCRYPTION_KEY (bytes)"] = [key_bytes, base64.b64encode(key_bytes)[:24]]
    for name, variants in forms.items():
        for form in variants:
            assert form not in data, f"{name} found in {where}"


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Recognisable fake secrets, set in the environment the way a user sets them."""
    secrets = {
        "OPENAI_API_KEY": f"sk-keeltest-{uuid.uuid4().hex}",
        "KEEL_ENCRYPTION_KEY": uuid.uuid4().hex + uuid.uuid4().hex,  # 64 hex characters = 32 bytes
        "KEEL_CODEC_TOKEN": f"codec-keeltest-{uuid.uuid4().hex}",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "keel.toml"
    config.write_text("")
    monkeypatch.setenv("KEEL_CONFIG", str(config))
    return secrets


@pytest.fixture
def log_capture() -> Iterator[io.StringIO]:
    """Route every log record, at DEBUG, through the platform's JSON logging into a buffer."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_structlog = structlog.get_config()
    buffer = io.StringIO()
    configure_logging(fmt="json", level="DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)


@pytest.mark.unit
def test_settings_keep_secrets_out_of_renderings_and_files(planted: dict[str, str], tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.encryption_key is not None
    assert settings.encryption_key.get_secret_value() == planted["KEEL_ENCRYPTION_KEY"]
    for rendering in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        _assert_absent(rendering, planted, "a rendering of Settings")
    codec = build_codec()
    _assert_absent(repr(codec.codecs) + repr(vars(codec.codecs[-1])), planted, "a rendering of the codec")

    config = tmp_path / "keel.toml"
    config.write_text(f'[keel]\nencryption_key = "{planted["KEEL_ENCRYPTION_KEY"]}"\n')
    with pytest.raises(ConfigError, match="only come from the environment") as refused:
        load_settings(config)
    _assert_absent(str(refused.value), planted, "the config error")


# --- a real LLM call ---------------------------------------------------------------------------


def _llm_classes() -> tuple[Any, Any]:
    """`LLMActivities` and `LLMConfig` of `agentkeel.activities`; skip naming what is missing."""
    try:
        from agentkeel.activities.llm import LLMActivities
    except ImportError as exc:
        pytest.skip(f"agentkeel.activities.llm.LLMActivities is not available yet: {exc}")
    try:
        from agentkeel.activities.llm_config import LLMConfig
    except ImportError as exc:
        pytest.skip(f"agentkeel.activities.llm_config.LLMConfig is not available yet: {exc}")
    return LLMActivities, LLMConfig


@workflow.defn(name="SecretsTestWorkflow")
class SecretsTestWorkflow:
    """Makes one `call_llm` call, by its registered name, like the saga does."""

    @workflow.run
    async def run(self, request: LLMRequest) -> LLMResult:
        return await workflow.execute_activity(
            "call_llm",
            request,
            result_type=LLMResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )


def _history_payloads(events: Any) -> list[Payload]:
    return [payload for event in events for payload in _payloads(event)]


def _payloads(message: Message) -> Iterator[Payload]:
    """Every `Payload` inside a protobuf message (history events nest them at many depths)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, Payload):
                yield item
            elif isinstance(item, Message):
                yield from _payloads(item)


@pytest.mark.integration
async def test_api_key_reaches_no_log_line_and_no_history(
    planted: dict[str, str],
    log_capture: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
    dev_server: Any,
    task_queue: str,
    tmp_path: Path,
) -> None:
    llm_activities, llm_config = _llm_classes()
    offline_llm = request.getfixturevalue("offline_llm")
    # The provider reads its key from the variable named in keel.toml, never from the file itself.
    config = tmp_path / "keel.toml"  # KEEL_CONFIG points here (see `planted`)
    config.write_text(
        f"""
[providers.secretive]
base_url = "{offline_llm.base_url}"
api_key_env = "OPENAI_API_KEY"

[models.default]
chain = ["secretive:scripted"]
"""
    )
    assert planted["OPENAI_API_KEY"] not in config.read_text()
    caplog.set_level(logging.DEBUG)
    settings = load_settings()
    llm = llm_activities(llm_config.load(settings))

    marker = f"prompt-marker-{uuid.uuid4().hex[:8]}"
    client: Client = await connect(address=dev_server.address, data_converter=build_data_converter(settings))
    workflow_id = f"secrets-test-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[SecretsTestWorkflow],
            activities=[llm.call_llm],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            result = await client.execute_workflow(
                SecretsTestWorkflow.run,
                LLMRequest(
                    messages=[ChatMessage(role="user", content=f"Say hello. {marker}")],
                    correlation_id=f"corr-{workflow_id}",
                    idempotency_key=f"{workflow_id}:1",
                ),
                id=workflow_id,
                task_queue=task_queue,
                static_summary=f"secrets test {marker}",
            )
    finally:
        close = getattr(llm, "aclose", None)
        if close is not None:
            await close()
    assert result.provider == "secretive"

    # The key did travel: the provider saw an Authorization header (its journal redacts the value).
    journal = await _maybe_await(offline_llm.control.journal())
    ours = [e for e in journal if marker in str(e.get("body"))]
    assert ours, "the offline provider never received the call"
    assert all(e["headers"].get("authorization", "").startswith("Bearer ") for e in ours)
    _assert_absent(str(journal), planted, "the provider's journal")

    # No log line anywhere.
    captured = capsys.readouterr()
    logged = log_capture.getvalue()
    assert workflow_id in logged or "call_llm" in logged, "logging was not captured at all"
    _assert_absent(logged, planted, "the platform's log output")
    _assert_absent(captured.out + captured.err, planted, "stdout/stderr")
    for record in caplog.records:
        _assert_absent(record.getMessage() + repr(record.__dict__), planted, f"log record {record.name}")
    _assert_absent(offline_llm.log(), planted, "the offline provider's log")

    # No history: neither the stored bytes nor the decrypted payloads.
    history = await dev_server.client.get_workflow_handle(workflow_id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    _assert_absent(raw, planted, "the raw history")
    assert marker.encode() not in raw  # encrypted at rest
    codec = build_codec()
    decoded = b"".join(p.SerializeToString() for p in await codec.decode(_history_payloads(history.events)))
    assert marker.encode() in decoded  # decryption worked, so the next check means something
    _assert_absent(decoded, planted, "the decrypted history")


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value
