"""The starting gate: nodes made paused are let run together once all are made."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

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


def test_template_remove_waits_for_a_clone_being_made_and_the_clone_then_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_warmstore import _record
    from vnode import api
    from vnode.errors import EnvironmentProblem
    from vnode.scheduler import held_template
    from vnode.warm import WarmSource
    from vnode.warmstorage import StateFiles
    from vnode.warmstore import read_template

    state = tmp_path / "state"
    directory = _record(state, "abcd1234")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[defaults]\nuri = "test:///default"\n[paths]\nstate = "{state}"\n'
        f'image_store = "{tmp_path / "images"}"\n[images]\nauto_refresh = false\n'
    )
    monkeypatch.setenv("VNODE_CONFIG", str(config))
    record = read_template(directory)
    assert record is not None and record.damage is None
    storage = StateFiles(
        conn=None, root=state / "templates", nodes_dir=state / "nodes", host="local"
    )
    template = WarmSource(record, storage)

    removed: list[object] = []
    removing = threading.Thread(target=lambda: removed.extend(api.remove_templates("abcd1234")))
    with held_template(state / "locks", template, "n1"):
        removing.start()
        removing.join(timeout=2)
        # A clone is being made from it: remove waits for its overlay to exist.
        assert removing.is_alive() and directory.is_dir()
    removing.join(timeout=60)
    assert not removing.is_alive() and not directory.exists()
    assert [r.key for r in removed] == ["abcd1234"]  # type: ignore[attr-defined]

    # A clone that comes after the removal says so instead of booting from nothing.
    with (
        pytest.raises(EnvironmentProblem, match="was removed before n2"),
        held_template(state / "locks", template, "n2"),
    ):
        pass
