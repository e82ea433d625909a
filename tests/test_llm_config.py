"""`agentkeel.activities.llm_config`: providers, prices and model aliases from `keel.toml`, and built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.activities.llm_config import (
    ChainLink,
    LLMConfig,
    LLMConfigError,
    UnknownAliasError,
)
from agentkeel.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings(llm_host="127.0.0.1", llm_port=8911)

TOML = """
[providers.local]
base_url = "http://127.0.0.1:11434/v1/"
api_key_env = "LOCAL_KEY"
timeout_s = 12.5
fail_max = 3
reset_timeout_s = 7
max_connections = 8

[providers.local.prices."llama3:8b"]
input_per_mtok = 2.0
output_per_mtok = 6.0

[providers.local.prices."*"]
input_per_mtok = 1.0
output_per_mtok = 1.0

[models.smart]
chain = ["local:llama3:8b", "offline:scripted"]

[models.cheap]
chain = ["offline:scripted"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keel.toml"
    path.write_text(text)
    return path


def test_builtin_default_when_nothing_is_configured(tmp_path: Path) -> None:
    config = LLMConfig.load(SETTINGS, env={}, path=tmp_path / "absent.toml")
    assert set(config.providers) == {"offline"}
    offline = config.providers["offline"]
    assert offline.base_url == "http://127.0.0.1:8911/v1"
    assert offline.api_key_env is None
    assert offline.api_key({}).get_secret_value() == "offline"
    assert config.resolve("default") == [ChainLink(provider="offline", model="scripted")]


def test_providers_prices_and_chains_from_the_file(tmp_path: Path) -> None:
    config = LLMConfig.load(SETTINGS, env={}, path=write(tmp_path, TOML))
    local = config.providers["local"]
    assert local.base_url == "http://127.0.0.1:11434/v1"
    assert (local.timeout_s, local.fail_max, local.reset_timeout_s, local.max_connections) == (12.5, 3, 7, 8)
    # A model colon is part of the model name: only the first colon splits the provider off.
    assert config.resolve("smart") == [
        ChainLink(provider="local", model="llama3:8b"),
        ChainLink(provider="offline", model="scripted"),
    ]
    # No `default` alias in the file: it points at the first chain.
    assert config.resolve("default") == config.resolve("smart")
    assert local.cost("llama3:8b", 1_000_000, 500_000) == pytest.approx(2.0 + 3.0)
    assert local.cost("other", 2_000_000, 0) == pytest.approx(2.0)  # the "*" price
    # the built-in offline provider has fictional prices, so budgets and cost show in the demo
    assert config.providers["offline"].cost("scripted", 10**6, 10**6) == pytest.approx(0.5 + 1.5)


def test_keel_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    config = LLMConfig.load(SETTINGS, env={"KEEL_CONFIG": str(path)})
    assert "smart" in config.models


def test_a_literal_api_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.x]\nbase_url = "http://h/v1"\napi_key = "sk-secret"\n')
    with pytest.raises(LLMConfigError) as info:
        LLMConfig.load(SETTINGS, env={}, path=path)
    assert "providers.x.api_key" in str(info.value)
    assert "api_key_env" in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_unknown_provider_in_a_chain(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.m]\nchain = ["nope:gpt", "offline:scripted"]\n')
    with pytest.raises(LLMConfigError, match=r"models\.m\.chain: unknown provider 'nope'"):
        LLMConfig.load(SETTINGS, env={}, path=path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[models.m]\nchain = ["justamodel"]\n', "must be 'provider:model'"),
        ("[models.m]\nchain = []\n", "models.m.chain"),
        ('[providers.p]\nbase_url = "ftp://x"\n', "must start with http"),
        ('[providers.p]\nbase_url = "http://x"\nfail_max = 0\n', "providers.p.fail_max"),
        ('[providers.p]\nbase_url = "http://x"\ncolour = "red"\n', "providers.p.colour"),
        ('[providers.p]\nbase_url = "http://x"\n[providers.p.prices.m]\ninput_per_mtok = -1\n', "prices"),
        ("providers = 3\n", "[providers] must be a table"),
    ],
)
def test_invalid_configurations_are_explained(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(LLMConfigError) as info:
        LLMConfig.load(SETTINGS, env={}, path=write(tmp_path, text))
    assert expected in str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(LLMConfigError):
        LLMConfig.load(SETTINGS, env={}, path=write(tmp_path, "[providers\n"))


def test_openai_provider_appears_with_its_key_variable(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-test-123"}
    config = LLMConfig.load(SETTINGS, env=env, path=tmp_path / "absent.toml")
    openai_provider = config.providers["openai"]
    assert openai_provider.base_url == "https://api.openai.com/v1"
    assert openai_provider.api_key_env == "OPENAI_API_KEY"
    assert openai_provider.api_key(env).get_secret_value() == "sk-test-123"
    # The key is read on demand only: it is in no dump or repr of the configuration.
    assert "sk-test-123" not in config.model_dump_json()
    assert "sk-test-123" not in repr(config)
    assert "sk-test-123" not in repr(openai_provider.api_key(env))
    assert config.resolve("default") == [ChainLink(provider="offline", model="scripted")]

    env["OPENAI_BASE_URL"] = "http://proxy.local/v1"
    assert LLMConfig.load(SETTINGS, env=env, path=tmp_path / "absent.toml").providers["openai"].base_url == (
        "http://proxy.local/v1"
    )


def test_a_configured_openai_provider_wins(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.openai]\nbase_url = "http://mine/v1"\napi_key_env = "MY_KEY"\n')
    config = LLMConfig.load(SETTINGS, env={"OPENAI_API_KEY": "sk"}, path=path)
    assert config.providers["openai"].base_url == "http://mine/v1"
    assert config.providers["openai"].api_key_env == "MY_KEY"


def test_missing_key_variable_fails_when_the_key_is_read(tmp_path: Path) -> None:
    config = LLMConfig.load(SETTINGS, env={}, path=write(tmp_path, TOML))
    with pytest.raises(LLMConfigError, match="LOCAL_KEY"):
        config.providers["local"].api_key({})
    assert config.providers["local"].api_key({"LOCAL_KEY": "k"}).get_secret_value() == "k"


def test_unknown_alias(tmp_path: Path) -> None:
    config = LLMConfig.load(SETTINGS, env={}, path=write(tmp_path, TOML))
    with pytest.raises(UnknownAliasError, match="'nope'.*cheap, default, smart"):
        config.resolve("nope")


def test_an_explicit_default_alias_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, TOML + '\n[models.default]\nchain = ["offline:other"]\n')
    config = LLMConfig.load(SETTINGS, env={}, path=path)
    assert config.resolve("default") == [ChainLink(provider="offline", model="other")]
