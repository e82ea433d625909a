"""Who may decide a review, and how a pending review is described to people.

Pure functions of the review policy and the request, so the workflow, its
update validator and its signal handlers all say no for the same reasons.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import ReviewPolicy, ReviewRequest
    from agentkeel.signing import decision_message, verify

_AMOUNT_KEYS = ("amount_usd", "amount", "total_usd", "price_usd", "cost_usd")
"""Arguments shown as money in a review's one-line description, first match wins."""
_ARGUMENTS_SHOWN = 80


def authority_problem(
    policy: ReviewPolicy,
    *,
    workflow_id: str,
    request: ReviewRequest,
    decision: str,
    reviewer: str,
    arguments: dict[str, Any] | None,
    signature: str | None,
) -> str | None:
    """Why this reviewer's decision may not be applied, or None when it may.

    Args:
        policy: The team's review policy (`reviewers` patterns, `reviewer_keys`).
        workflow_id: The run's workflow id (part of what a signature covers).
        request: The pending review.
        decision: `approve`, `reject` or `edit`.
        reviewer: Who decided.
        arguments: Edited arguments (for `edit`), else None.
        signature: Base64 Ed25519 signature, when the decision came signed.
    """
    if policy.reviewers and not any(fnmatch.fnmatchcase(reviewer, p) for p in policy.reviewers):
        return f"reviewer {reviewer!r} may not decide for this team (allowed: {', '.join(policy.reviewers)})"
    if not policy.reviewer_keys:
        return None
    if not signature:
        return "this team accepts signed decisions only (sign with the key named by KEEL_REVIEWER_KEY)"
    message = decision_message(
        workflow_id=workflow_id,
        request_id=request.request_id,
        decision=decision,
        reviewer=reviewer,
        arguments=arguments,
    )
    # cryptography's Rust core imports Python modules lazily on its first verification; inside
    # the sandbox that import must pass through, or the extension module is loaded twice.
    with workflow.unsafe.imports_passed_through():
        signer = verify(policy.reviewer_keys, message, signature)
    if signer is None:
        return (
            "the signature is not one of the team's reviewer keys over this run, review request, "
            "decision, reviewer and arguments"
        )
    return None


def short_arguments(arguments: dict[str, Any]) -> str:
    """A money amount when the arguments hold one (`$1,123.50`), else `key=value` pairs, cut short."""
    for key in _AMOUNT_KEYS:
        value = arguments.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"${value:,.2f}"
    text = ", ".join(f"{k}={json.dumps(v, sort_keys=True, default=str)}" for k, v in arguments.items())
    return text if len(text) <= _ARGUMENTS_SHOWN else text[: _ARGUMENTS_SHOWN - 1] + "…"


def describe_request(request: ReviewRequest) -> str:
    """One line for people: `planner wants charge_card $1,123.50`."""
    if request.kind == "tool":
        shown = short_arguments(request.arguments)
        return f"{request.agent} wants {request.tool}" + (f" {shown}" if shown else "")
    if request.kind == "final_answer":
        return f"{request.agent} wants to give its final answer"
    return f"{request.agent} wants to go over budget ({request.reasoning})"
