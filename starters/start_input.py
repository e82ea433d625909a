"""What a run starts with: size limits, the workflow id, and what the Temporal UI shows of it.

Checked on the client, before anything is sent: Temporal would accept some oversized
payloads and fail later in ways a user cannot read, and workflow input that fails
validation on the worker makes the run's first task retry forever.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from pydantic import BaseModel

from agentkeel.contracts import SagaRequest
from agentkeel.names import WORKFLOW_ID_PREFIX
from agentkeel.starters.errors import InvalidInput

SUMMARY_MAX = 200
"""The UI shows the static summary on one line; longer goals are cut."""
DETAILS_GOAL_MAX = 2000
"""Characters of the goal copied into the UI's details; the whole goal is in the run's input."""
DETAILS_META_MAX = 200
"""Characters of each metadata value copied into the UI's details."""
MAX_DECISION_BYTES = 256 * 1024
"""A review decision or signal bigger than this is refused before it is sent: the server would accept
an oversized update, the worker could not answer it, and the run's workflow task would fail."""
MAX_GOAL_BYTES = 128 * 1024
"""Largest goal accepted (UTF-8 bytes). Temporal refuses payloads over 2 MB (and gRPC messages over
4 MB) with a raw error, and the goal is copied into every LLM call's input and the transcript,
so the limit leaves room for the conversation that grows from it."""
MAX_METADATA_BYTES = 16 * 1024
"""Largest metadata accepted, keys and values together (UTF-8 bytes)."""
MAX_REQUEST_BYTES = 512 * 1024
"""Largest start request accepted as JSON (goal, metadata and an inline team spec together)."""


def new_workflow_id(team: str) -> str:
    """A fresh workflow id: `keel-<team>-<12 hex chars>`."""
    return f"{WORKFLOW_ID_PREFIX}-{team}-{uuid.uuid4().hex[:12]}"


def summary(team: str, goal: str) -> str:
    """The one-line summary the UI shows: `team: goal`, white space folded, cut at `SUMMARY_MAX`."""
    text = " ".join(f"{team}: {goal}".split())
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + f"… ({len(text):,} characters in all)"


def details(request: SagaRequest, entry: str | None, workflow_id: str) -> str:
    """Markdown shown in the UI's details: one paragraph per fact, metadata as a list.

    Long goals and metadata values are cut: the details are a second copy of them in the history.
    """
    blocks = [
        f"**Team:** {request.team_label}",
        f"**Goal:** {_clip(request.goal, DETAILS_GOAL_MAX)}",
        f"**Correlation id:** `{request.correlation_id}`",
        f"**Workflow id:** `{workflow_id}`",
    ]
    if entry:
        blocks.append(f"**Entry agent:** {entry}")
    if request.metadata:
        items = "\n".join(
            f"- {key}: {_clip(value, DETAILS_META_MAX)}" for key, value in sorted(request.metadata.items())
        )
        blocks.append(f"**Metadata:**\n{items}")
    return "\n\n".join(blocks)


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB" if size >= 1024 else f"{size} bytes"


def check_request_size(request: SagaRequest) -> None:
    """Refuse a start request Temporal could not carry, before it is sent.

    Raises:
        InvalidInput: the goal, the metadata or the whole request is over its limit (named in the message).
    """
    check_goal_and_metadata(request.goal, request.metadata)
    total = len(request.model_dump_json().encode())
    if total > MAX_REQUEST_BYTES:
        raise InvalidInput(f"the start request is {_kib(total)}, over the {_kib(MAX_REQUEST_BYTES)} limit")


def check_goal_and_metadata(goal: str, metadata: Mapping[str, str]) -> None:
    """Refuse a goal or metadata over its size limit (the limit is in the message).

    Raises:
        InvalidInput: one of them is too large.
    """
    size = len(goal.encode())
    if size > MAX_GOAL_BYTES:
        raise InvalidInput(
            f"the goal is {_kib(size)}, over the {_kib(MAX_GOAL_BYTES)} limit; "
            "put large documents where a tool can read them and give their location in the goal"
        )
    meta = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in metadata.items())
    if meta > MAX_METADATA_BYTES:
        raise InvalidInput(f"the metadata is {_kib(meta)}, over the {_kib(MAX_METADATA_BYTES)} limit")


def check_payload_size(what: str, payload: BaseModel) -> None:
    """Refuse a review decision or signal over `MAX_DECISION_BYTES` (named `what` in the message).

    Raises:
        InvalidInput: the payload is too large.
    """
    size = len(payload.model_dump_json())
    if size > MAX_DECISION_BYTES:
        raise InvalidInput(f"the {what} is {size} bytes, over the {MAX_DECISION_BYTES} byte limit")
