"""The starting gate: nodes made paused are let run together once all are made."""

from __future__ import annotations

import asyncio

from vnode.scheduler import _StartingGate


def test_the_gate_opens_when_the_last_node_arrives() -> None:
    async def run() -> list[str]:
        gate = _StartingGate(3)
        events: list[str] = []

        async def node(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            events.append(f"{name} made")
            gate.arrive()
            await gate.opened()
            events.append(f"{name} runs")

        await asyncio.gather(node("a", 0.0), node("b", 0.05), node("c", 0.1))
        return events

    events = asyncio.run(run())
    assert events[:3] == ["a made", "b made", "c made"]
    assert sorted(events[3:]) == ["a runs", "b runs", "c runs"]


def test_a_node_that_failed_to_be_made_still_lets_the_others_go() -> None:
    async def run() -> bool:
        gate = _StartingGate(2)
        gate.arrive()  # made
        gate.arrive()  # failed: arrives all the same
        await asyncio.wait_for(gate.opened(), 1)
        return True

    assert asyncio.run(run())


def test_an_empty_gate_is_open() -> None:
    asyncio.run(asyncio.wait_for(_StartingGate(0).opened(), 1))
