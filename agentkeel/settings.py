"""Settings: one model read from `KEEL_*` environment variables and an optional `keel.toml`.

The Temporal connection is not here: it stays with Temporal's own environment
configuration (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`,
`TEMPORAL_PROFILE`, ...), read by `temporalio.envconfig`.

Secrets (API keys, the encryption key) are read from the environment only and
are excluded from `repr` and from dumps, so they never reach a log line.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agentkeel.names import OFFLINE_LLM_PORT, TASK_QUEUE, UI_PORT
from agentkeel.validation import format_validation_error

CONFIG_ENV = "KEEL_CONFIG"
DEFAULT_CONFIG = "keel.toml"
CONFIG_TABLES: tuple[str, ...] = ("keel", "store", "providers", "models")
"""The top-level tables `keel.toml` may hold; anything else is a typo that would be ignored silently."""
SERVER_STATE_FILE = "server.json"
"""Written under `home` by `keel server` while it runs: its address and Web UI URL, so run links
follow `--ui-port` when `KEEL_UI_URL` is unset."""
DEFAULT_UI_URL = f"http://localhost:{UI_PORT}"


class ConfigError(ValueError):
    """The configuration file or a `KEEL_*` variable is invalid."""


class StoreSettings(BaseModel):
    """The conversation store (`[store]` in `keel.toml`). Precedence: `KEEL_STORE_<KEY>` env var,
    then `[store]`, then default."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, repr=False)
    """`sqlite:///path` or `postgresql://user:password@host/db`; None: `sqlite:///<home>/store.db`.
    Out of `repr`: it may hold a password."""
    cache_mb: int = Field(default=64, ge=0)
    """Bound of each process's in-memory cache of content, in MiB; 0 disables it."""


class Settings(BaseModel):
    """Process settings. Precedence: `KEEL_<FIELD>` env var, then `[keel]` in `keel.toml`, then default.

    `store` is the `[store]` table (see `StoreSettings`), with its own `KEEL_STORE_<KEY>` variables.
    """

    model_config = ConfigDict(extra="forbid")

    home: Path = Path(".keel")
    """Where local state lives: the dev server's SQLite file, the example ledger, logs."""
    task_queue: str = TASK_QUEUE
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    llm_host: str = "127.0.0.1"
    llm_port: int = OFFLINE_LLM_PORT
    ledger_path: Path | None = None
    """SQLite ledger of the example tools; `<home>/ledger.db` when unset."""
    teams_dir: Path | None = None
    """Folder of extra team files (YAML/JSON) registered by name."""
    apps: list[str] = Field(default_factory=list)
    """Apps (`MODULE[:ATTR]`) whose tools and teams workers register and starters know by name:
    `apps = [...]` under `[keel]`, or `KEEL_APPS` separated by commas."""
    ui_url: str = DEFAULT_UI_URL
    """Base URL of the Temporal Web UI, used to print run links: `KEEL_UI_URL`, `keel.toml`, else
    the UI of the `keel server` running with this `home`, else the dev server's default."""
    max_concurrent_activities: int = Field(default=200, gt=0)
    max_concurrent_workflow_tasks: int = Field(default=100, gt=0)
    encryption_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    """AES-GCM key (env `KEEL_ENCRYPTION_KEY` only)."""
    codec_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @property
    def ledger(self) -> Path:
        """The example ledger's path."""
        return self.ledger_path or self.home / "ledger.db"


_ENV_ONLY = {"encryption_key", "codec_token"}
_LIST_FIELDS = {"apps"}
_TABLES: dict[str, type[BaseModel]] = {"store": StoreSettings}
"""Settings fields read from a table of their own (`[store]`), not from `[keel]`."""


def config_path() -> Path:
    """Path of `keel.toml`: `KEEL_CONFIG`, else `./keel.toml`."""
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_config_file(path: Path | None = None) -> dict[str, Any]:
    """Read `keel.toml` as a dict; an absent file is an empty config.

    Raises:
        ConfigError: the file exists but is not valid TOML, or `KEEL_CONFIG` names a missing file.
    """
    path = path or config_path()
    if not path.exists():
        if CONFIG_ENV in os.environ:
            raise ConfigError(f"{CONFIG_ENV}={path} does not exist")
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = sorted(set(raw) - set(CONFIG_TABLES))
    if unknown:
        names = ", ".join(f"[{name}]" for name in unknown)
        raise ConfigError(
            f"{path}: unknown table {names} (keel.toml holds {', '.join(f'[{t}]' for t in CONFIG_TABLES)})"
        )
    return raw


def write_server_state(home: Path, *, address: str, ui_url: str) -> Path:
    """Record the running `keel server`'s address and Web UI URL under `home` (see `SERVER_STATE_FILE`)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / SERVER_STATE_FILE
    path.write_text(json.dumps({"address": address, "ui_url": ui_url, "pid": os.getpid()}))
    return path


def clear_server_state(home: Path) -> None:
    """Forget the server recorded by `write_server_state` (it has stopped)."""
    (home / SERVER_STATE_FILE).unlink(missing_ok=True)


def _server_ui_url(home: Path, address: str | None) -> str | None:
    """The Web UI URL of the `keel server` recorded under `home`, if its process still runs and
    it serves `address` (when one is set)."""
    try:
        state = json.loads((home / SERVER_STATE_FILE).read_text())
        pid, url = int(state["pid"]), str(state["ui_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if address and address.rsplit(":", 1)[-1] != str(state.get("address", "")).rsplit(":", 1)[-1]:
        return None  # the client talks to another server
    try:
        os.kill(pid, 0)  # a server that died without cleaning up must not redirect links
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return url


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the settings from the config file and the environment.

    Raises:
        ConfigError: a value does not fit its field (one line per problem).
    """
    env = dict(os.environ if env is None else env)
    config = load_config_file(path)
    raw: dict[str, Any] = dict(config.get("keel", {}))
    for secret in _ENV_ONLY:
        if secret in raw:
            raise ConfigError(f"{secret} may only come from the environment (KEEL_{secret.upper()})")
    for table in _TABLES:
        if table in raw:
            raise ConfigError(f"{table} settings go in their own [{table}] table, not under [keel]")
    for name in Settings.model_fields:
        value = env.get(f"KEEL_{name.upper()}")
        if name not in _TABLES and value is not None and value != "":
            raw[name] = [v.strip() for v in value.split(",") if v.strip()] if name in _LIST_FIELDS else value
    for table, model in _TABLES.items():
        raw[table] = _table_settings(table, model, config.get(table, {}), env)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {format_validation_error(exc)}") from None
    if "ui_url" not in raw:
        recorded = _server_ui_url(settings.home, env.get("TEMPORAL_ADDRESS"))
        if recorded:
            settings = settings.model_copy(update={"ui_url": recorded})
    return settings


def _table_settings(table: str, model: type[BaseModel], values: Any, env: dict[str, str]) -> dict[str, Any]:
    """A table's raw values, `KEEL_<TABLE>_<KEY>` variables on top.

    Raises:
        ConfigError: the table is not a table, or holds a key its model does not know (a typo
            that would otherwise be ignored).
    """
    if not isinstance(values, dict):
        raise ConfigError(f"[{table}] must be a table")
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields)
        raise ConfigError(f"[{table}]: unknown key {', '.join(unknown)} (known keys: {known})")
    raw = dict(values)
    for name in model.model_fields:
        value = env.get(f"KEEL_{table.upper()}_{name.upper()}")
        if value is not None and value != "":
            raw[name] = value
    return raw
