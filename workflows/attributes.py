"""`SearchAttributeWriter`: one search-attribute upsert per workflow task, only of what changed.

Every `workflow.upsert_search_attributes` call becomes its own history event and
its own visibility write on the server. A saga step changes several attributes
at different places (tokens and cost after the LLM call, the agent on a
handoff, the status at the end), so writing each at once cost the server more
than the step's activity did. The writer collects changes and sends them in
one upsert, dropping values the run already has (including those set when the
run was started), at the points where the workflow is about to wait.

Usable from users' own workflows:

    attrs = SearchAttributeWriter()
    attrs.set(KEEL_TOKENS.value_set(tokens), KEEL_COST_USD.value_set(cost))
    attrs.flush()  # before the next activity, timer or wait_condition
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate


class SearchAttributeWriter:
    """Coalesces search-attribute changes of a workflow into one upsert per flush.

    Args:
        coalesce: False writes every `set` at once, as an unbuffered upsert (for histories
            recorded before coalescing, which replay only with the old command sequence).
    """

    def __init__(self, *, coalesce: bool = True) -> None:
        self.coalesce = coalesce
        self._pending: dict[str, SearchAttributeUpdate[Any]] = {}

    def set(self, *updates: SearchAttributeUpdate[Any]) -> None:
        """Record changes; a later value of the same attribute replaces an earlier one."""
        if not self.coalesce:
            workflow.upsert_search_attributes(list(updates))
            return
        for update in updates:
            self._pending[update.key.name] = update

    def flush(self) -> None:
        """Upsert the recorded changes that differ from the run's current values, in one command."""
        if not self._pending:
            return
        current = workflow.info().typed_search_attributes
        changed = [u for u in self._pending.values() if current.get(u.key) != u.value]
        self._pending.clear()
        if changed:
            workflow.upsert_search_attributes(changed)
