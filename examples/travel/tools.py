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
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.contracts import CompensationRequest, ToolRequest, ToolResult
from agentkeel.examples.travel.ledger import Ledger, LedgerEntry


def _ref(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:8].upper()}"


def _price(base: float, *parts: Any) -> float:
    # Deterministic "market" price so runs and tests are reproducible.
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return round(base + digest[0] * 1.5, 2)


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.TOOL_INVALID_ARGUMENTS, non_retryable=True)


class TravelTools:
    """Activities of the `travel` team: book_flight, book_hotel, charge_card and their reversals."""

    def __init__(self, ledger: Ledger) -> None:
        """Use `ledger` for every side effect."""
        self.ledger = ledger

    async def _book(self, req: ToolRequest, action: str, ref: str, amount: float) -> LedgerEntry:
        entry, created = await asyncio.to_thread(
            self.ledger.record,
            req.idempotency_key,
            workflow_id=req.workflow_id,
            action=action,
            ref=ref,
            amount_usd=amount,
            details=req.arguments,
        )
        activity.logger.info(
            "ledger write" if created else "ledger write skipped: already done",
            extra={"action": action, "ref": entry.ref, "idempotency_key": req.idempotency_key},
        )
        return entry

    async def _undo(self, req: CompensationRequest, action: str) -> ToolResult:
        entry, created = await asyncio.to_thread(self.ledger.reverse, req.idempotency_key, action=action)
        if entry is None:
            activity.logger.info("nothing to reverse", extra={"action": action, "key": req.idempotency_key})
            return ToolResult(output={"reversed": False}, summary=f"{action}: nothing to undo")
        activity.logger.info(
            "ledger reversal" if created else "ledger reversal skipped: already done",
            extra={"action": action, "ref": entry.ref},
        )
        return ToolResult(output={"reversed": True, "ref": entry.ref}, summary=f"{action} {entry.ref}")

    @activity.defn(name="book_flight")
    async def book_flight(self, req: ToolRequest) -> ToolResult:
        """Book a flight: arguments `origin`, `destination`, `date`, optional `passengers`."""
        a = req.arguments
        passengers = int(a.get("passengers", 1))
        if passengers < 1 or passengers > 9:
            raise _invalid("passengers must be between 1 and 9")
        if a.get("origin") == a.get("destination"):
            raise _invalid("origin and destination must differ")
        # Rounded to the cent: a charge that sums the prices must match the ledger exactly.
        price = round(_price(180, a.get("origin"), a.get("destination"), a.get("date")) * passengers, 2)
        entry = await self._book(req, "book_flight", _ref("FL", req.idempotency_key), price)
        who = f", {passengers} passengers" if passengers > 1 else ""
        return ToolResult(
            output={"booking_ref": entry.ref, "price_usd": entry.amount_usd},
            summary=(
                f"flight {a.get('origin')}→{a.get('destination')} {a.get('date')}{who} "
                f"{entry.ref} ${entry.amount_usd:.2f}"
            ),
        )

    @activity.defn(name="cancel_flight")
    async def cancel_flight(self, req: CompensationRequest) -> ToolResult:
        """Cancel the flight booked under the request's idempotency key."""
        return await self._undo(req, "cancel_flight")

    @activity.defn(name="book_hotel")
    async def book_hotel(self, req: ToolRequest) -> ToolResult:
        """Book a hotel: arguments `city`, `check_in`, `nights`."""
        a = req.arguments
        nights = int(a.get("nights", 1))
        if nights < 1 or nights > 60:
            raise _invalid("nights must be between 1 and 60")
        price = _price(90, a.get("city"), a.get("check_in")) * nights
        entry = await self._book(req, "book_hotel", _ref("HT", req.idempotency_key), round(price, 2))
        return ToolResult(
            output={"booking_ref": entry.ref, "price_usd": entry.amount_usd},
            summary=(
                f"hotel in {a.get('city')} from {a.get('check_in')}, {nights} nights "
                f"{entry.ref} ${entry.amount_usd:.2f}"
            ),
        )

    @activity.defn(name="cancel_hotel")
    async def cancel_hotel(self, req: CompensationRequest) -> ToolResult:
        """Cancel the hotel booked under the request's idempotency key."""
        return await self._undo(req, "cancel_hotel")

    @activity.defn(name="charge_card")
    async def charge_card(self, req: ToolRequest) -> ToolResult:
        """Charge the traveller's card: arguments `amount_usd`, `description`."""
        amount = float(req.arguments.get("amount_usd", 0))
        if amount <= 0:
            raise _invalid("amount_usd must be positive")
        entry = await self._book(req, "charge_card", _ref("CH", req.idempotency_key), amount)
        return ToolResult(
            output={"charge_id": entry.ref, "amount_usd": entry.amount_usd},
            summary=f"charged ${entry.amount_usd:.2f} ({entry.ref})",
        )

    @activity.defn(name="refund_card")
    async def refund_card(self, req: CompensationRequest) -> ToolResult:
        """Refund the charge made under the request's idempotency key."""
        return await self._undo(req, "refund_card")

    def activities(self) -> list[Any]:
        """Every activity of this class, for worker registration."""
        return [
            self.book_flight,
            self.cancel_flight,
            self.book_hotel,
            self.cancel_hotel,
            self.charge_card,
            self.refund_card,
        ]
