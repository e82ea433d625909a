"""The foundation: compose file, `keel server`/`keel worker`/`keel ping`, settings, logging, metrics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
import yaml
from temporalio import activity, workflow

# The sandbox re-imports this module to validate the test workflow below; these are not workflow code.
with workflow.unsafe.imports_passed_through():
    import httpx

    from agentkeel.contracts import ToolRequest
    from agentkeel.dev.devserver import DevServer, find_free_port, is_listening, is_serving
    from agentkeel.logs import configure_logging
    from agentkeel.search_attributes import cli_types
    from agentkeel.settings import ConfigError, load_settings
    from agentkeel.temporal import TemporalUnavailable, connect, connect_config, ui_url
    from agentkeel.workers import metrics
    from agentkeel.workers.worker import build_worker

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
TEMPORAL = str(BIN / "temporal")
KEEL = [sys.executable, "-c", "from agentkeel.starters.cli import main; main()"]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would point a client elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "KEEL_"))}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- temporal-dev.yml


def _embedded_versions() -> dict[str, str]:
    out = subprocess.run([TEMPORAL, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Server (\d+\.\d+\.\d+), UI (\d+\.\d+\.\d+)", out)
    assert match, out
    return {"server": match.group(1), "ui": match.group(2)}


@pytest.mark.unit
def test_compose_file_pins_the_embedded_versions_and_registers_every_attribute():
    compose = yaml.safe_load((ROOT / "temporal-dev.yml").read_text())
    services = compose["services"]
    assert {"postgresql", "temporal-schema", "temporal", "temporal-setup", "temporal-ui"} <= set(services)

    images = {name: svc["image"] for name, svc in services.items()}
    for name, image in images.items():
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: {image} is not pinned"
    versions = _embedded_versions()
    assert images["temporal"] == f"temporalio/server:{versions['server']}"
    assert images["temporal-schema"] == f"temporalio/admin-tools:{versions['server']}"
    assert images["temporal-setup"] == f"temporalio/admin-tools:{versions['server']}"
    assert images["temporal-ui"] == f"temporalio/ui:{versions['ui']}"

    assert "7233:7233" in services["temporal"]["ports"]
    assert "8080:8080" in services["temporal-ui"]["ports"]
    assert (
        services["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    )

    script = "\n".join(services["temporal-setup"]["command"])
    registered = dict(re.findall(r"^\s*add (\w+) (\w+)\s*$", script, flags=re.MULTILINE))
    assert registered == cli_types()
    assert list(registered) == list(cli_types())


# --------------------------------------------------------------------------- dev server


@pytest.mark.unit
def test_dev_server_command_line_carries_the_fast_settings(tmp_path):
    on_file = DevServer(port=7300, db_path=tmp_path / "t.db", codec_endpoint="http://127.0.0.1:8081").args()
    joined = " ".join(on_file)
    assert on_file[1:3] == ["server", "start-dev"]
    assert "--port 7300" in joined and "--ui-port 8300" in joined
    assert "--dynamic-config-value history.transferProcessorMaxPollRPS=10000" in joined
    assert "--sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=normal" in joined
    assert f"--db-filename {tmp_path / 't.db'}" in joined
    assert "--ui-codec-endpoint http://127.0.0.1:8081" in joined
    for name, kind in cli_types().items():
        assert f"--search-attribute {name}={kind}" in joined

    in_memory = DevServer(port=7300, db_path=None).args()
    assert "--db-filename" not in in_memory and "--sqlite-pragma" not in in_memory


@pytest.mark.integration
def test_keel_server_registers_every_attribute_and_stops_cleanly():
    port, ui_port = find_free_port(), find_free_port()
    server = subprocess.Popen(
        [*KEEL, "server", "--in-memory", "--port", str(port), "--ui-port", str(ui_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_clean_env(),
    )
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline()
        assert f"127.0.0.1:{port}" in first_line, first_line
        assert f"Web UI: http://localhost:{ui_port}" in server.stdout.readline()
        assert is_serving("127.0.0.1", port)

        listed = subprocess.run(
            [
                TEMPORAL,
                "operator",
                "search-attribute",
                "list",
                "--address",
                f"127.0.0.1:{port}",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        custom = json.loads(listed.stdout)["customAttributes"]
        kinds = {name: kind.removeprefix("INDEXED_VALUE_TYPE_").lower() for name, kind in custom.items()}
        for name, kind in cli_types().items():
            assert kinds.get(name) == kind.lower(), f"{name} missing or wrong type: {kinds}"

        again = subprocess.run(
            [*KEEL, "server", "--in-memory", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            env=_clean_env(),
        )
        assert again.returncode == 0
        assert "already serving" in again.stdout

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        assert not is_listening("127.0.0.1", port)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _children(pid: int) -> dict[int, str]:
    """Child process ids of `pid` and their command lines (Linux /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.integration
async def test_keel_dev_prefixes_output_and_fails_when_a_child_dies():
    if not sys.platform.startswith("linux"):
        pytest.skip("needs /proc to find the worker child")
    port, ui_port = find_free_port(), find_free_port()
    dev = await asyncio.create_subprocess_exec(
        *KEEL,
        "dev",
        "--in-memory",
        "--no-llm",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_clean_env(),
    )
    assert dev.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any(line.startswith("[worker] ") and "worker started" in line for line in seen):
                line = (await dev.stdout.readline()).decode()
                assert line, f"keel dev ended early: {seen}"
                seen.append(line)
            workers = [pid for pid, cmd in _children(dev.pid).items() if cmd.rstrip().endswith(" worker")]
            assert len(workers) == 1, _children(dev.pid)
            assert is_serving("127.0.0.1", port)
            os.kill(workers[0], signal.SIGKILL)
            rest, _ = await dev.communicate()
        seen += rest.decode().splitlines(keepends=True)
        assert dev.returncode == 7  # ExitCode.SERVICE_FAILED
        assert any(line.startswith("[server] ") for line in seen)
        assert any(line.startswith("[worker] ") for line in seen)
        assert any("[dev] worker was killed by signal 9" in line for line in seen), seen
        assert not is_listening("127.0.0.1", port)  # the server was stopped with it
    finally:
        if dev.returncode is None:
            dev.kill()
            await dev.wait()


# --------------------------------------------------------------------------- keel worker / keel ping


@pytest.mark.unit
def test_keel_worker_without_a_server_prints_one_line_and_fails():
    port = find_free_port()
    result = subprocess.run(
        [*KEEL, "worker"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_clean_env(TEMPORAL_ADDRESS=f"127.0.0.1:{port}"),
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"keel: cannot reach Temporal at 127.0.0.1:{port} (namespace default): connection refused"
    ]
    assert result.stdout == ""


@pytest.mark.unit
async def test_connect_raises_a_one_line_error_when_nothing_listens():
    port = find_free_port()
    with pytest.raises(TemporalUnavailable) as caught:
        await connect(address=f"127.0.0.1:{port}")
    assert isinstance(caught.value, ConnectionError)
    assert "\n" not in str(caught.value)


@pytest.mark.integration
async def test_client_command_exit_codes_are_right_30_times(dev_server):
    """`keel ping` connects and describes a namespace; every run must leave with its own exit code."""

    async def ping(namespace: str) -> tuple[str, int, str]:
        proc = await asyncio.create_subprocess_exec(
            *KEEL,
            "ping",
            "--namespace",
            namespace,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_clean_env(TEMPORAL_ADDRESS=dev_server.address),
        )
        out, err = await proc.communicate()
        return namespace, proc.returncode or 0, (out + err).decode()

    expected = {"default": 0, "no-such-namespace": 3}
    runs = [("default" if i % 2 == 0 else "no-such-namespace") for i in range(30)]
    results = []
    for start in range(0, len(runs), 6):
        results += await asyncio.gather(*(ping(ns) for ns in runs[start : start + 6]))
    wrong = [(ns, code, text) for ns, code, text in results if code != expected[ns]]
    assert not wrong, wrong
    assert len(results) == 30


# --------------------------------------------------------------------------- settings and env config


@pytest.mark.unit
def test_settings_from_env_and_toml(tmp_path):
    config = tmp_path / "keel.toml"
    config.write_text('[keel]\ntask_queue = "from-toml"\nllm_port = 9100\nlog_format = "json"\n')
    settings = load_settings(config, env={"KEEL_LLM_PORT": "9200", "KEEL_HOME": str(tmp_path / "h")})
    assert settings.task_queue == "from-toml"
    assert settings.llm_port == 9200  # env wins over the file
    assert settings.home == tmp_path / "h"
    assert settings.log_format == "json"
    assert settings.ledger == tmp_path / "h" / "ledger.db"

    secret = load_settings(config, env={"KEEL_ENCRYPTION_KEY": "sekrit-key-123"})
    assert secret.encryption_key is not None
    assert "sekrit-key-123" not in repr(secret) and "sekrit-key-123" not in secret.model_dump_json()

    config.write_text('[keel]\nencryption_key = "in-a-file"\n')
    with pytest.raises(ConfigError):
        load_settings(config, env={})
    with pytest.raises(ConfigError):
        load_settings(tmp_path / "absent.toml", env={"KEEL_LLM_PORT": "not-a-port"})


@pytest.mark.unit
def test_temporal_env_config_and_overrides(tmp_path):
    profiles = tmp_path / "temporal.toml"
    profiles.write_text('[profile.staging]\naddress = "staging.example:7233"\nnamespace = "agents"\n')
    env = {"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "staging"}
    assert connect_config(env=env) == {"target_host": "staging.example:7233", "namespace": "agents"}
    env["TEMPORAL_ADDRESS"] = "other:7233"
    assert connect_config(env=env)["target_host"] == "other:7233"
    assert connect_config(address="x:1", namespace="n", env=env) == {"target_host": "x:1", "namespace": "n"}
    assert connect_config(env={}) == {"target_host": "localhost:7233", "namespace": "default"}
    with_key = connect_config(env={"TEMPORAL_API_KEY": "k", "TEMPORAL_ADDRESS": "cloud:7233"})
    assert with_key["api_key"] == "k" and with_key["tls"] is True


@pytest.mark.unit
def test_ui_url():
    assert (
        ui_url("keel-travel-1", namespace="default", base="http://localhost:8233/")
        == "http://localhost:8233/namespaces/default/workflows/keel-travel-1"
    )
    assert (
        ui_url("a b", "r1", namespace="ns", base="http://ui") == "http://ui/namespaces/ns/workflows/a%20b/r1"
    )


# --------------------------------------------------------------------------- logging


@activity.defn(name="foundation_log_probe")
async def log_probe(request: ToolRequest) -> str:
    activity.logger.info("from the activity logger")
    structlog.get_logger("probe").info("from structlog", step=request.step)
    logging.getLogger("some.library").warning("from a plain stdlib logger")
    return request.correlation_id


@workflow.defn(name="FoundationLogWorkflow")
class LogWorkflow:
    @workflow.run
    async def run(self, request: ToolRequest) -> str:
        workflow.logger.info("from the workflow logger")
        return await workflow.execute_activity(
            log_probe, request, start_to_close_timeout=timedelta(seconds=10)
        )


@pytest.mark.unit
async def test_activity_log_lines_carry_the_run_context(time_env, task_queue, worker_settings):
    stream = io.StringIO()
    configure_logging(fmt="json", level="INFO", stream=stream)
    correlation_id = f"corr-{uuid.uuid4().hex[:8]}"
    workflow_id = f"log-test-{uuid.uuid4().hex[:8]}"
    try:
        worker = build_worker(
            time_env.client,
            worker_settings,
            task_queue,
            activities=[log_probe],
            workflows=[LogWorkflow],
            apps=[],
            platform_activities=False,
        )
        async with worker:
            handle = await time_env.client.start_workflow(
                LogWorkflow.run,
                ToolRequest(idempotency_key="k", correlation_id=correlation_id, step=3),
                id=workflow_id,
                task_queue=task_queue,
            )
            assert await handle.result() == correlation_id
        run_id = handle.result_run_id
    finally:
        configure_logging(fmt="json", level="INFO")

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    in_activity = [
        rec for rec in lines if rec["event"].startswith("from") and rec["event"] != "from the workflow logger"
    ]
    assert {rec["event"] for rec in in_activity} == {
        "from the activity logger",
        "from structlog",
        "from a plain stdlib logger",
    }
    for rec in in_activity:
        assert rec["workflow_id"] == workflow_id, rec
        assert rec["run_id"] == run_id, rec
        assert rec["activity_type"] == "foundation_log_probe", rec
        assert rec["attempt"] == 1, rec
        assert rec["correlation_id"] == correlation_id, rec
        assert "timestamp" in rec and "level" in rec
    assert next(rec for rec in in_activity if rec["event"] == "from structlog")["step"] == 3

    from_workflow = [rec for rec in lines if rec["event"] == "from the workflow logger"]
    assert from_workflow, lines
    assert from_workflow[0]["workflow_id"] == workflow_id
    assert from_workflow[0]["run_id"] == run_id


@pytest.mark.unit
def test_console_rendering_and_idempotent_configuration():
    stream = io.StringIO()
    try:
        configure_logging(fmt="console", level="INFO", stream=stream)
        configure_logging(fmt="console", level="INFO", stream=stream)
        structlog.get_logger("t").info("hello console", answer=42)
        logging.getLogger("t.debug").debug("hidden at INFO")
    finally:
        configure_logging(fmt="json", level="INFO")
    text = stream.getvalue()
    assert text.count("hello console") == 1  # a second configure replaces, never stacks
    assert "answer" in text and "42" in text
    assert "hidden at INFO" not in text
    assert not text.lstrip().startswith("{")


# --------------------------------------------------------------------------- metrics


@pytest.mark.unit
def test_custom_metrics_reach_the_prometheus_endpoint():
    port = find_free_port()
    metrics.build_runtime(f"127.0.0.1:{port}")
    try:
        metrics.set_gauge("keel_test_breaker_state", 2, {"provider": "primary"})
        metrics.add_counter("keel_test_trips", 3, {"provider": "primary"})
        deadline = time.monotonic() + 5
        while True:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            if "keel_test_trips" in body or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        metrics.use_runtime(None)
    assert re.search(r'keel_test_breaker_state\{[^}]*provider="primary"[^}]*\} 2', body), body
    assert re.search(r'keel_test_trips\{[^}]*provider="primary"[^}]*\} 3', body), body
    with pytest.raises(metrics.MetricsBindError):
        metrics.parse_bind("nonsense")
