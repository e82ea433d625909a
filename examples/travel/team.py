"""The `travel` team in Python: a planner, a flights agent and a hotels agent.

Tools are the `@tool` methods of `TravelTools` (taken from the class here, for their specs; the
app registers them from an instance that owns the ledger). Charging the card waits for a person.
"""

from __future__ import annotations

from agentkeel import Agent, Team
from agentkeel.examples.travel.tools import TravelTools

flights = Agent(
    name="flights",
    instructions=(
        "You are the flight specialist (agent: flights). Book the flight the planner asked for, "
        "then hand the work to the hotel specialist."
    ),
    tools=[TravelTools.book_flight],
)
hotels = Agent(
    name="hotels",
    instructions=(
        "You are the hotel specialist (agent: hotels). Book the hotel, then hand the work back "
        "to the planner with the booking reference."
    ),
    tools=[TravelTools.book_hotel],
)
planner = Agent(
    name="planner",
    instructions=(
        "You are the travel planner (agent: planner). Break the traveller's request into a flight "
        "and a hotel, hand each to the right specialist, then charge the card for the total "
        "and answer with a short summary of the trip."
    ),
    tools=[TravelTools.charge_card],
    handoffs=[flights, hotels],
)
flights.handoffs = [hotels, planner]
hotels.handoffs = [planner]

travel = Team(
    name="travel",
    description="Books a trip (flight, hotel) and charges the traveller's card after a person approves.",
    entry=planner,
    agents=[planner, flights, hotels],
    max_turns=16,
    max_handoffs=6,
    budget={"max_tokens": 20000, "max_cost_usd": 0.50},
    review={"timeout_s": 86400, "on_timeout": "escalate", "escalation_timeout_s": 86400},
)
