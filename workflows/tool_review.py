"""Whether one tool call waits for a person: the team's policy, the tool's flag and condition,
then the tool's Python predicate (a local activity, so its answer is recorded in history)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import TeamSpec, ToolRequest, ToolSpec

from agentkeel.workflows.policies import REVIEW_CHECK_RETRY, REVIEW_CHECK_TIMEOUT


async def needs_review(team: TeamSpec, spec: ToolSpec, request: ToolRequest) -> bool:
    """Whether the call `request` of `spec` needs a person's approval before it runs."""
    if team.needs_review(spec.name, request.arguments):
        return True
    if spec.review_check is None:
        return False
    # A predicate is user code: as a local activity it runs once, and a replay reads its answer.
    return await workflow.execute_local_activity(
        spec.review_check,
        request,
        result_type=bool,
        start_to_close_timeout=REVIEW_CHECK_TIMEOUT,
        retry_policy=REVIEW_CHECK_RETRY,
        summary=f"does {spec.name} need review?",
    )
