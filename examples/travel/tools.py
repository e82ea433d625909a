"""The travel-booking example's tools and their compensations, writing to the SQLite ledger.

Every tool is keyed by the idempotency key the workflow gives it (unique to one
saga execution and step, see `ToolRequest.idempotency_key`), so a retry returns
the first booking instead of booking again; every compensation reverses by the
same key and does nothing when the tool never ran.

Each booking's result carries its `price_usd`: what the planner charges is the
sum of those prices (the offline provider's travel scenario reads them from the
conversation), so the ledger's charge always equals what was booked.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

from pydantic import Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.contracts import ToolResult
from agentkeel.examples.travel.ledger import Ledger, LedgerEntry
from agentkeel.tools import Tool, tool, tool_context


def _ref(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:8].upper()}"


def _price(base: float, *parts: Any) -> float:
    # Deterministic "market" price so runs and tests are reproducible.
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return round(base + digest[0] * 1.5, 2)


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.TOOL_INVALID_ARGUMENTS, non_retryable=True)


Date = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
Place = Annotated[str, Field(min_length=2)]


class TravelTools:
    """The `travel` team's tools and their compensations, on one ledger.

    Methods decorated with `@tool`: take them from an instance (`TravelTools(ledger).book_flight`),
    which owns the ledger they write to.
    """

    def __init__(self, ledger: Ledger) -> None:
        """Use `ledger` for every side effect."""
        self.ledger = ledger

    async def _book(self, action: str, prefix: str, amount: float, details: dict[str, Any]) -> LedgerEntry:
        ctx = tool_context()
        entry, created = await asyncio.to_thread(
            self.ledger.record,
            ctx.idempotency_key,
            workflow_id=ctx.workflow_id,
            action=action,
            ref=_ref(prefix, ctx.idempotency_key),
            amount_usd=amount,
            details=details,
        )
        activity.logger.info(
            "ledger write" if created else "ledger write skipped: already done",
            extra={"action": action, "ref": entry.ref, "idempotency_key": ctx.idempotency_key},
        )
        return entry

    async def _undo(self, action: str) -> ToolResult:
        key = tool_context().idempotency_key
        entry, created = await asyncio.to_thread(self.ledger.reverse, key, action=action)
        if entry is None:
            activity.logger.info("nothing to reverse", extra={"action": action, "key": key})
            return ToolResult(output={"reversed": False}, summary=f"{action}: nothing to undo")
        activity.logger.info(
            "ledger reversal" if created else "ledger reversal skipped: already done",
            extra={"action": action, "ref": entry.ref},
        )
        return ToolResult(output={"reversed": True, "ref": entry.ref}, summary=f"{action} {entry.ref}")

    @tool
    async def book_flight(
        self,
        origin: Annotated[str, Field(min_length=3)],
        destination: Annotated[str, Field(min_length=3)],
        date: Date,
        passengers: Annotated[int, Field(ge=1, le=9)] = 1,
    ) -> ToolResult:
        """Book a flight for the traveller."""
        if origin == destination:
            raise _invalid("origin and destination must differ")
        # Rounded to the cent: a charge that sums the prices must match the ledger exactly.
        price = round(_price(180, origin, destination, date) * passengers, 2)
        details = {"origin": origin, "destination": destination, "date": date, "passengers": passengers}
        entry = await self._book("book_flight", "FL", price, details)
        who = f", {passengers} passengers" if passengers > 1 else ""
        return ToolResult(
            output={"booking_ref": entry.ref, "price_usd": entry.amount_usd},
            summary=f"flight {origin}→{destination} {date}{who} {entry.ref} ${entry.amount_usd:.2f}",
        )

    @book_flight.compensate
    async def cancel_flight(
        self, origin: str, destination: str, date: str, passengers: int = 1
    ) -> ToolResult:
        """Cancel the flight booked under the step's idempotency key (nothing, if it never was)."""
        return await self._undo("cancel_flight")

    @tool
    async def book_hotel(
        self, city: Place, check_in: Date, nights: Annotated[int, Field(ge=1, le=60)]
    ) -> ToolResult:
        """Book a hotel room."""
        price = round(_price(90, city, check_in) * nights, 2)
        entry = await self._book(
            "book_hotel", "HT", price, {"city": city, "check_in": check_in, "nights": nights}
        )
        return ToolResult(
            output={"booking_ref": entry.ref, "price_usd": entry.amount_usd},
            summary=f"hotel in {city} from {check_in}, {nights} nights {entry.ref} ${entry.amount_usd:.2f}",
        )

    @book_hotel.compensate
    async def cancel_hotel(self, city: str, check_in: str, nights: int) -> ToolResult:
        """Cancel the hotel booked under the step's idempotency key."""
        return await self._undo("cancel_hotel")

    @tool(requires_review=True)
    async def charge_card(self, amount_usd: Annotated[float, Field(gt=0)], description: str) -> ToolResult:
        """Charge the traveller's card for the whole trip."""
        entry = await self._book(
            "charge_card", "CH", amount_usd, {"amount_usd": amount_usd, "description": description}
        )
        return ToolResult(
            output={"charge_id": entry.ref, "amount_usd": entry.amount_usd},
            summary=f"charged ${entry.amount_usd:.2f} ({entry.ref})",
        )

    @charge_card.compensate
    async def refund_card(self, amount_usd: float, description: str) -> ToolResult:
        """Refund the charge made under the step's idempotency key."""
        return await self._undo("refund_card")

    def tools(self) -> list[Tool]:
        """The three tools, bound to this object (their compensations come with them)."""
        return [self.book_flight, self.book_hotel, self.charge_card]

    def activities(self) -> list[Any]:
        """Every activity of the tools and their compensations, for worker registration."""
        return [act for t in self.tools() for act in t.activities()]
