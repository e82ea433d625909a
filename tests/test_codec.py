"""The payload codec (compression, AES-GCM encryption, key rotation) and the codec server."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agentkeel.codec import (
    ENCODING_ENCRYPTED,
    ENCODING_ZLIB,
    KEY_ID_KEY,
    CodecConfigError,
    CodecError,
    UnknownKeyError,
    build_codec,
    build_data_converter,
    derive_key_id,
    parse_key,
)
from agentkeel.dev.codec_server import CodecServer
from agentkeel.dev.devserver import find_free_port, is_listening
from agentkeel.settings import Settings
from agentkeel.starters import cmd_codec
from agentkeel.starters.cli import CliError
from agentkeel.temporal import connect

TEMPORAL = Path(sys.executable).parent / "temporal"


def _key() -> bytes:
    return os.urandom(32)


def _payload(data: bytes, encoding: bytes = b"json/plain", **extra: bytes) -> Payload:
    return Payload(metadata={"encoding": encoding, **extra}, data=data)


def _big_json(secret: str = "x") -> bytes:
    return (b'{"text": "' + (secret.encode() + b" lorem ipsum dolor sit amet ") * 400 + b'"}')[:12000]


# --- codec unit tests --------------------------------------------------------------------------


@pytest.mark.unit
async def test_small_payload_passes_through_unchanged_without_key() -> None:
    codec = build_codec({})
    small = _payload(b'{"a": 1}')
    encoded = await codec.encode([small])
    assert encoded == [small]
    assert await codec.decode(encoded) == [small]


@pytest.mark.unit
async def test_large_payload_is_compressed_and_restored_exactly() -> None:
    codec = build_codec({})
    big = _payload(_big_json(), messageType=b"demo.Big")
    (encoded,) = await codec.encode([big])
    assert encoded.metadata["encoding"] == ENCODING_ZLIB
    assert len(encoded.data) < len(big.data) / 4
    (decoded,) = await codec.decode([encoded])
    assert decoded == big  # encoding and every other metadata field come back


@pytest.mark.unit
async def test_incompressible_payload_is_left_alone_and_threshold_is_configurable() -> None:
    random_blob = _payload(os.urandom(20000), b"binary/plain")
    assert await build_codec({}).encode([random_blob]) == [random_blob]
    medium = _payload(b'{"t": "' + b"a" * 2000 + b'"}')
    assert (await build_codec({}).encode([medium]))[0] == medium  # under 4 KiB
    (low,) = await build_codec({"KEEL_COMPRESSION_THRESHOLD": "100"}).encode([medium])
    assert low.metadata["encoding"] == ENCODING_ZLIB
    big = _payload(_big_json())
    switched_off = build_codec({"KEEL_COMPRESSION_THRESHOLD": "off"})
    assert await switched_off.encode([big]) == [big]
    # ...but it still reads what a process with compression on wrote.
    assert await switched_off.decode(await build_codec({}).encode([big])) == [big]
    with pytest.raises(CodecConfigError, match="KEEL_COMPRESSION_THRESHOLD"):
        build_codec({"KEEL_COMPRESSION_THRESHOLD": "lots"})


@pytest.mark.unit
async def test_every_payload_is_encrypted_with_a_key() -> None:
    key = _key()
    codec = build_codec({"KEEL_ENCRYPTION_KEY": base64.b64encode(key).decode()})
    secret = f"sk-secret-{uuid.uuid4().hex}"
    small = _payload(f'"{secret}"'.encode())
    big = _payload(_big_json(secret))
    encoded = await codec.encode([small, big])
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING_ENCRYPTED
        assert payload.metadata[KEY_ID_KEY] == derive_key_id(key).encode()
        assert secret.encode() not in payload.SerializeToString()
        assert b"json/plain" not in payload.SerializeToString()
    # The big one was compressed before encryption.
    assert len(encoded[1].data) < len(big.data) / 4
    assert await codec.decode(encoded) == [small, big]
    # Two encodings of the same payload differ (random nonce).
    assert (await codec.encode([small]))[0].data != encoded[0].data


@pytest.mark.unit
async def test_key_rotation_old_keys_still_decrypt_and_unknown_ids_fail_clearly() -> None:
    old_key, new_key = _key(), _key()
    before = build_codec({"KEEL_ENCRYPTION_KEY": f"k2024:{old_key.hex()}"})
    sealed = await before.encode([_payload(b'"written last year"')])
    assert sealed[0].metadata[KEY_ID_KEY] == b"k2024"

    rotated = build_codec(
        {
            "KEEL_ENCRYPTION_KEY": f"k2025:{new_key.hex()}",
            "KEEL_ENCRYPTION_KEYS_OLD": f"k2024:{old_key.hex()}",
        }
    )
    assert (await rotated.decode(sealed))[0].data == b'"written last year"'
    fresh = await rotated.encode([_payload(b'"new"')])
    assert fresh[0].metadata[KEY_ID_KEY] == b"k2025"

    only_new = build_codec({"KEEL_ENCRYPTION_KEY": f"k2025:{new_key.hex()}"})
    with pytest.raises(UnknownKeyError, match=r"key id 'k2024'.*KEEL_ENCRYPTION_KEYS_OLD"):
        await only_new.decode(sealed)
    with pytest.raises(UnknownKeyError, match="no key is configured"):
        await build_codec({}).decode(sealed)


@pytest.mark.unit
async def test_tampered_or_relabelled_ciphertext_is_rejected() -> None:
    key = _key()
    codec = build_codec(
        {"KEEL_ENCRYPTION_KEY": f"a:{key.hex()}", "KEEL_ENCRYPTION_KEYS_OLD": f"b:{key.hex()}"}
    )
    (sealed,) = await codec.encode([_payload(b'"x"')])
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(CodecError, match="failed authentication"):
        await codec.decode([flipped])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_KEY] = b"b"  # same key, other id: the id is authenticated too
    with pytest.raises(CodecError, match="failed authentication"):
        await codec.decode([relabelled])


@pytest.mark.unit
def test_bad_keys_are_refused_without_echoing_them() -> None:
    bad = "not-a-key-" + uuid.uuid4().hex
    with pytest.raises(CodecConfigError) as info:
        build_codec({"KEEL_ENCRYPTION_KEY": bad})
    assert bad not in str(info.value)
    assert "32 bytes" in str(info.value)
    with pytest.raises(CodecConfigError, match="KEEL_ENCRYPTION_KEY is not"):
        build_codec({"KEEL_ENCRYPTION_KEYS_OLD": _key().hex()})
    key = _key()
    assert parse_key(base64.urlsafe_b64encode(key).decode().rstrip("=")).key == key
    assert key.hex() not in repr(parse_key(key.hex()))


@pytest.mark.unit
async def test_data_converter_round_trips_models_and_encrypts_failures() -> None:
    class Order(BaseModel):
        item: str
        qty: int

    key = _key().hex()
    converter = build_data_converter({"KEEL_ENCRYPTION_KEY": key})
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    (payload,) = await converter.encode([Order(item="secret-widget", qty=3)])
    assert b"secret-widget" not in payload.SerializeToString()
    assert await converter.decode([payload], [Order]) == [Order(item="secret-widget", qty=3)]

    from_settings = build_data_converter(Settings(encryption_key=key))
    assert await from_settings.decode([payload], [Order]) == [Order(item="secret-widget", qty=3)]
    plain = build_data_converter({})
    assert plain.failure_converter_class is not DefaultFailureConverterWithEncodedAttributes
    (unencrypted,) = await plain.encode([Order(item="w", qty=1)])
    assert unencrypted.metadata["encoding"] == b"json/plain"


# --- codec server ------------------------------------------------------------------------------


@pytest.fixture
def codec_env() -> dict[str, str]:
    return {"KEEL_ENCRYPTION_KEY": _key().hex()}


@pytest_asyncio.fixture(loop_scope="session")
async def codec_server(codec_env: dict[str, str]) -> AsyncIterator[CodecServer]:
    server = CodecServer(
        build_codec(codec_env), "tok-" + uuid.uuid4().hex, port=0, cors_origins=["http://localhost:8233"]
    )
    async with server:
        yield server


def _token(server: CodecServer) -> str:
    return server._token.decode()


@pytest.mark.unit
async def test_codec_server_encodes_and_decodes_with_the_token(
    codec_server: CodecServer, codec_env: dict[str, str]
) -> None:
    body = {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}, "data": ""}]}
    body["payloads"][0]["data"] = base64.b64encode(b'"hello codec"').decode()
    auth = {"Authorization": f"Bearer {_token(codec_server)}", "X-Namespace": "default"}
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        encoded = await http.post("/encode", json=body, headers=auth)
        assert encoded.status_code == 200, encoded.text
        sealed = encoded.json()["payloads"][0]
        assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING_ENCRYPTED
        assert b"hello codec" not in base64.b64decode(sealed["data"])
        # The worker's own codec reads what the server encoded.
        local = Payload(
            metadata={k: base64.b64decode(v) for k, v in sealed["metadata"].items()},
            data=base64.b64decode(sealed["data"]),
        )
        assert (await build_codec(codec_env).decode([local]))[0].data == b'"hello codec"'

        decoded = await http.post("/decode", json=encoded.json(), headers=auth)
        assert decoded.status_code == 200
        assert decoded.json() == body
        # Mounted under a prefix, with the token as a path segment (the Web UI's way).
        via_path = await http.post(f"/{_token(codec_server)}/decode", json=encoded.json())
        assert via_path.status_code == 200
        assert via_path.json() == body


@pytest.mark.unit
async def test_codec_server_refuses_requests_without_the_right_token(codec_server: CodecServer) -> None:
    body = {"payloads": []}
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": _token(codec_server)}):
            response = await http.post("/decode", json=body, headers=headers)
            assert response.status_code == 401, headers
            assert "payloads" not in response.text
        wrong_path = await http.post("/not-the-token/decode", json=body)
        assert wrong_path.status_code == 401
        ok = await http.post(
            "/decode", json=body, headers={"Authorization": f"Bearer {_token(codec_server)}"}
        )
        assert ok.status_code == 200
        assert ok.json() == {}  # protobuf JSON of an empty Payloads
        bad = await http.post(
            "/decode", content=b"{not json", headers={"Authorization": f"Bearer {_token(codec_server)}"}
        )
        assert bad.status_code == 400


@pytest.mark.unit
async def test_codec_server_cors_preflight_answers_the_ui_origin_only(codec_server: CodecServer) -> None:
    preflight = {
        "Origin": "http://localhost:8233",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        response = await http.options("/decode", headers=preflight)
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "http://localhost:8233"
        assert response.headers["access-control-allow-credentials"] == "true"
        allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-namespace"} <= allowed
        assert "POST" in response.headers["access-control-allow-methods"]

        other = await http.options("/decode", headers={**preflight, "Origin": "http://evil.example"})
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers

        # The actual request from the UI's origin carries the CORS headers too, even when refused.
        refused = await http.post("/decode", json={}, headers={"Origin": "http://localhost:8233"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "http://localhost:8233"


# --- end to end with a real dev server ---------------------------------------------------------


class SecretInput(BaseModel):
    note: str


@activity.defn(name="codec_test_echo")
async def codec_test_echo(request: SecretInput) -> SecretInput:
    return SecretInput(note=f"echo {request.note}")


@activity.defn(name="codec_test_fail")
async def codec_test_fail(request: SecretInput) -> None:
    raise ApplicationError(f"refused {request.note}", non_retryable=True)


@workflow.defn(name="CodecTestWorkflow")
class CodecTestWorkflow:
    @workflow.run
    async def run(self, request: SecretInput) -> SecretInput:
        echoed = await workflow.execute_activity(
            codec_test_echo, request, start_to_close_timeout=timedelta(seconds=10)
        )
        if request.note.startswith("fail"):
            await workflow.execute_activity(
                codec_test_fail, request, start_to_close_timeout=timedelta(seconds=10)
            )
        return echoed


async def _temporal_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(TEMPORAL), *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return int(process.returncode or 0), out.decode(errors="replace")


@pytest.mark.integration
async def test_history_is_unreadable_without_the_codec_and_readable_with_it(
    dev_server, task_queue: str, codec_env: dict[str, str], codec_server: CodecServer
) -> None:
    secret = f"sk-keeltest-{uuid.uuid4().hex}"
    client = await connect(address=dev_server.address, data_converter=build_data_converter(codec_env))
    workflow_id = f"codec-test-{uuid.uuid4().hex[:8]}"
    failing_id = workflow_id + "-fail"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[CodecTestWorkflow],
        activities=[codec_test_echo, codec_test_fail],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await client.execute_workflow(
            CodecTestWorkflow.run,
            SecretInput(note=secret),
            id=workflow_id,
            task_queue=task_queue,
            static_summary=f"summary {secret}",
            static_details=f"details {secret}",
        )
        assert result == SecretInput(note=f"echo {secret}")
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                CodecTestWorkflow.run,
                SecretInput(note=f"fail {secret}"),
                id=failing_id,
                task_queue=task_queue,
            )
        # The client holding the key reads the failure message back.
        assert secret in str(failed.value.cause.cause or failed.value.cause)

    # A plain client (pydantic converter, no codec) sees only ciphertext: inputs, results,
    # summaries, and failure messages.
    plain: Client = dev_server.client
    for wid in (workflow_id, failing_id):
        history = await plain.get_workflow_handle(wid).fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        assert secret.encode() not in raw
        assert base64.b64encode(secret.encode())[:20] not in raw
        assert ENCODING_ENCRYPTED in raw
        assert b"json/plain" not in raw

    address = ["--address", dev_server.address, "--namespace", dev_server.namespace]
    code, without = await _temporal_cli("workflow", "show", "-w", workflow_id, "--detailed", *address)
    assert code == 0, without
    assert secret not in without

    codec = ["--codec-endpoint", codec_server.url, "--codec-auth", f"Bearer {_token(codec_server)}"]
    code, shown = await _temporal_cli("workflow", "show", "-w", workflow_id, "--detailed", *address, *codec)
    assert code == 0, shown
    assert f"input[0].note: {secret}" in shown
    assert f"summary {secret}" in shown
    code, described = await _temporal_cli("workflow", "describe", "-w", workflow_id, *address, *codec)
    assert code == 0, described
    assert f"echo {secret}" in described
    # (A wrong token is covered above over HTTP: the CLI itself retries a 401 for ten seconds.)


# --- the `keel codec-server` command -----------------------------------------------------------


def _codec_command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="keel")
    cmd_codec.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["codec-server", *argv])


@pytest.mark.unit
async def test_keel_codec_server_serves_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    key, token = _key().hex(), "tok-" + uuid.uuid4().hex
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", key)
    monkeypatch.setenv("KEEL_CODEC_TOKEN", token)
    port = find_free_port()
    task = asyncio.create_task(cmd_codec._codec_server(_codec_command(["--port", str(port)])))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                if task.done() or is_listening("127.0.0.1", port, timeout=0.1):
                    break
                await asyncio.sleep(0.02)
            (sealed,) = await build_codec({"KEEL_ENCRYPTION_KEY": key}).encode([_payload(b'"via keel"')])
            body = {"payloads": [json_format.MessageToDict(sealed)]}
            response = await http.post("/decode", json=body, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            assert base64.b64decode(response.json()["payloads"][0]["data"]) == b'"via keel"'
            assert (await http.post("/decode", json=body)).status_code == 401
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not is_listening("127.0.0.1", port, timeout=0.1)


@pytest.mark.unit
async def test_keel_codec_server_needs_a_token_and_a_valid_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_CODEC_TOKEN", raising=False)
    monkeypatch.delenv("KEEL_ENCRYPTION_KEY", raising=False)
    with pytest.raises(CliError, match="KEEL_CODEC_TOKEN"):
        await cmd_codec._codec_server(_codec_command([]))
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", "too-short")
    with pytest.raises(CliError, match="32 bytes"):
        await cmd_codec._codec_server(_codec_command(["--token", "t"]))
