"""The offline OpenAI-compatible LLM provider (`keel llm`): scenario-scripted, fault-injecting, journaled.

* `server`: `OfflineProvider`, the asyncio server and its routes.
* `scenarios`: the scenario file format and how rules match.
* `faults`: `FaultConfig` and the order in which faults apply.
* `journal`: the request journal.
* `control`: `ProviderControl`, a client of the control API.
* `http11`: the HTTP/1.1 layer on `h11`.
"""

from __future__ import annotations

from agentkeel.dev.offline.control import ProviderControl, ProviderControlError
from agentkeel.dev.offline.faults import FaultConfig
from agentkeel.dev.offline.scenarios import Scenario, ScenarioError, load_scenarios
from agentkeel.dev.offline.server import OfflineProvider

__all__ = [
    "FaultConfig",
    "OfflineProvider",
    "ProviderControl",
    "ProviderControlError",
    "Scenario",
    "ScenarioError",
    "load_scenarios",
]
