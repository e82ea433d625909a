"""LLM provider configuration: `[providers.NAME]` and `[models.ALIAS]` in `keel.toml`.

    [providers.local]
    base_url = "http://127.0.0.1:11434/v1"
    api_key_env = "LOCAL_LLM_KEY"      # the NAME of the variable holding the key, never the key
    timeout_s = 60
    fail_max = 5                       # provider failures in a row before the breaker opens
    reset_timeout_s = 30               # seconds open before one probe is let through
    max_connections = 100

    [providers.local.prices."llama3:8b"]
    input_per_mtok = 0.0               # USD per million input tokens
    output_per_mtok = 0.0

    [providers.local.prices."*"]       # any other model of this provider
    input_per_mtok = 0.1
    output_per_mtok = 0.2

    [models.default]
    chain = ["local:llama3:8b", "offline:scripted"]   # tried in order

Built-in pieces, always present; a file that redefines a built-in provider keeps the URL and
prices it does not restate:

* provider `offline` at `http://{settings.llm_host}:{settings.llm_port}/v1`, the offline provider
  (`keel llm`); its key is a dummy.
* provider `openai` (`https://api.openai.com/v1`, or `OPENAI_BASE_URL`) when `OPENAI_API_KEY` is set.
* alias `default`: `offline:scripted` when the file defines no alias; else the first alias's chain.

API keys are read from the environment when the HTTP clients are built
(`ProviderConfig.api_key`), never kept in these models: they are logged, and
nothing here may carry a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agentkeel.settings import CONFIG_ENV, DEFAULT_CONFIG, ConfigError, Settings, load_config_file

OFFLINE_PROVIDER = "offline"
OFFLINE_MODEL = "scripted"
OFFLINE_API_KEY = "offline"
"""A dummy: the offline provider (and most local servers) ignore the key, but the client wants one."""
OPENAI_PROVIDER = "openai"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_ALIAS = "default"
ANY_MODEL = "*"
"""Price key matching every model of a provider that has no price of its own."""


class LLMConfigError(ConfigError):
    """The provider or model configuration is invalid, or a provider's key variable is unset."""


class UnknownAliasError(LookupError):
    """An agent names a model alias the configuration does not define."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Model):
    """USD per million tokens."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for one call's usage."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


OFFLINE_PRICE = Price(input_per_mtok=0.50, output_per_mtok=1.50)
"""Fictional prices of the offline provider, so cost accounting and budgets show in the demo and tests."""


class ProviderConfig(_Model):
    """One OpenAI-compatible endpoint.

    Attributes:
        name: The provider's name (the `NAME` of `[providers.NAME]`).
        base_url: OpenAI base URL, usually ending in `/v1`.
        api_key_env: Name of the environment variable holding the key; None sends a dummy key.
        timeout_s: Per-request timeout (connect, read, write).
        fail_max: Provider failures in a row that open the breaker.
        reset_timeout_s: Seconds the breaker stays open before a probe is let through.
        max_connections: Size of the HTTP connection pool.
        prices: Model name (or `"*"`) -> price.
    """

    name: str
    base_url: str
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    fail_max: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=100, ge=1)
    prices: dict[str, Price] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url {v!r} must start with http:// or https://")
        return v.rstrip("/")

    def price_for(self, model: str) -> Price | None:
        """The model's price, else the provider's `"*"` price, else None (cost 0)."""
        return self.prices.get(model) or self.prices.get(ANY_MODEL)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """USD for one call, 0 when no price is configured."""
        price = self.price_for(model)
        return price.cost(input_tokens, output_tokens) if price else 0.0

    def api_key(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """Read the key from the environment (call only when building the client).

        Raises:
            LLMConfigError: `api_key_env` names a variable that is unset or empty.
        """
        if self.api_key_env is None:
            return SecretStr(OFFLINE_API_KEY)
        value = (os.environ if env is None else env).get(self.api_key_env, "")
        if not value:
            raise LLMConfigError(
                f"provider {self.name!r}: environment variable {self.api_key_env} (api_key_env) is not set"
            )
        return SecretStr(value)


class ChainLink(_Model):
    """One `provider:model` entry of an alias chain."""

    provider: str
    model: str

    @classmethod
    def parse(cls, text: str) -> ChainLink:
        """Parse `provider:model` (the model may itself hold colons, e.g. `ollama:llama3:8b`).

        Raises:
            ValueError: no provider or no model.
        """
        provider, sep, model = text.partition(":")
        if not sep or not provider or not model:
            raise ValueError(f"chain entry {text!r} must be 'provider:model'")
        return cls(provider=provider, model=model)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class ModelAlias(_Model):
    """`[models.ALIAS]`: an ordered fallback chain."""

    chain: list[ChainLink] = Field(min_length=1)

    @field_validator("chain", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [ChainLink.parse(x) if isinstance(x, str) else x for x in v]
        return v


class LLMConfig(_Model):
    """Every provider and model alias a worker knows."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelAlias]

    def resolve(self, alias: str) -> list[ChainLink]:
        """The chain of `alias`.

        Raises:
            UnknownAliasError: no such alias.
        """
        found = self.models.get(alias)
        if found is None:
            raise UnknownAliasError(
                f"unknown model alias {alias!r}; configured aliases: {', '.join(sorted(self.models))}"
            )
        return list(found.chain)

    @classmethod
    def load(
        cls, settings: Settings, env: Mapping[str, str] | None = None, path: Path | None = None
    ) -> LLMConfig:
        """Read `keel.toml` (`path`, else `KEEL_CONFIG`, else `./keel.toml`) and add the built-ins.

        Raises:
            LLMConfigError: invalid providers or aliases, a literal `api_key`, an unknown provider in a chain.
        """
        env = os.environ if env is None else env
        if path is None:
            path = Path(env.get(CONFIG_ENV, DEFAULT_CONFIG))
        try:
            raw = load_config_file(path)
        except ConfigError as exc:
            raise LLMConfigError(str(exc)) from None
        return cls.from_dict(raw, settings, env)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], settings: Settings, env: Mapping[str, str]) -> LLMConfig:
        """Build the configuration from a parsed `keel.toml` (see `load`)."""
        raw_providers = _table(raw, "providers")
        raw_models = _table(raw, "models")
        providers: dict[str, ProviderConfig] = {
            OFFLINE_PROVIDER: ProviderConfig(
                name=OFFLINE_PROVIDER,
                base_url=f"http://{_url_host(settings.llm_host)}:{settings.llm_port}/v1",
                prices={ANY_MODEL: OFFLINE_PRICE},
            )
        }
        if env.get(OPENAI_KEY_ENV):
            providers[OPENAI_PROVIDER] = ProviderConfig(
                name=OPENAI_PROVIDER,
                base_url=env.get(OPENAI_BASE_URL_ENV) or OPENAI_BASE_URL,
                api_key_env=OPENAI_KEY_ENV,
            )
        problems: list[str] = []
        for name, table in raw_providers.items():
            where = f"providers.{name}"
            if not isinstance(table, Mapping):
                problems.append(f"{where}: expected a table")
                continue
            if "api_key" in table:
                problems.append(
                    f"{where}.api_key: keys never go in the config file; put the key in an environment "
                    f'variable and name it: api_key_env = "MY_KEY_VAR"'
                )
                continue
            if name in providers:
                # Redefining a built-in provider (say, `offline` with a longer timeout) keeps what the
                # table does not say: its URL and its prices (the table's prices win model by model).
                builtin = providers[name]
                prices = {**builtin.prices, **dict(table.get("prices") or {})}
                defaults = {"base_url": builtin.base_url, "api_key_env": builtin.api_key_env}
                table = {**defaults, **table, "prices": prices}
            try:
                providers[name] = ProviderConfig.model_validate({**table, "name": name})
            except ValidationError as exc:
                problems += _messages(where, exc)
        models: dict[str, ModelAlias] = {}
        for alias, table in raw_models.items():
            where = f"models.{alias}"
            try:
                models[alias] = ModelAlias.model_validate(table)
            except ValidationError as exc:
                problems += _messages(where, exc)
                continue
            for link in models[alias].chain:
                if link.provider not in providers:
                    problems.append(
                        f"{where}.chain: unknown provider {link.provider!r} in {str(link)!r}; "
                        f"configured providers: {', '.join(sorted(providers))}"
                    )
        if problems:
            raise LLMConfigError("invalid LLM configuration: " + "; ".join(problems))
        if DEFAULT_ALIAS not in models:
            models[DEFAULT_ALIAS] = (
                next(iter(models.values()))
                if models
                else ModelAlias(chain=[ChainLink(provider=OFFLINE_PROVIDER, model=OFFLINE_MODEL)])
            )
        return cls(providers=providers, models=models)


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise LLMConfigError(f"[{key}] must be a table")
    return value


def _messages(where: str, exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "name")
        out.append(f"{where}{'.' + loc if loc else ''}: {e['msg']}")
    return out


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
