"""Several hypervisor hosts: [[hosts]] config, NUM@host specs, placement, subnets. Pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode.config import build_config
from vnode.errors import UsageError
from vnode.hosts import (
    LOCAL,
    Capacity,
    Host,
    Load,
    Request,
    adopt_legacy_state,
    capacity_of,
    lab_hosts,
    place,
    state_dir,
)
from vnode.pools import Pool
from vnode.spec import parse_spec, parse_specs

HOSTS = ["hv1", "hv2"]
POOLS = (Pool(stem="vnode"),)


def req(name: str, pin: str | None = None, allowed: tuple[str, ...] = (), mem: int = 1024):
    return Request(name=name, memory_mib=mem, vcpus=1, pin=pin, allowed=allowed)


def test_new_nodes_go_to_the_host_with_most_free_memory() -> None:
    capacity = {"hv1": Capacity(memory_mib=4096), "hv2": Capacity(memory_mib=8192)}
    placed = place([req(f"n{i}") for i in range(6)], HOSTS, capacity, {})
    # hv2 takes nodes until both have the same room, then they alternate (hv1 first on ties).
    assert [placed[f"n{i}"] for i in range(6)] == ["hv2", "hv2", "hv2", "hv2", "hv1", "hv2"]


def test_existing_nodes_count_against_their_host() -> None:
    capacity = {"hv1": Capacity(memory_mib=4096), "hv2": Capacity(memory_mib=4096)}
    existing = {"old": ("hv1", Load("old", 3072, 1))}
    assert place([req("new")], HOSTS, capacity, existing) == {"new": "hv2"}


def test_a_re_created_node_goes_back_to_its_host() -> None:
    capacity = {"hv1": Capacity(memory_mib=2048), "hv2": Capacity(memory_mib=100_000)}
    existing = {"n1": ("hv1", Load("n1", 2048, 1))}
    # Its own share is freed first, so it fits again where it was, though hv2 has more room.
    assert place([req("n1", mem=2048)], HOSTS, capacity, existing) == {"n1": "hv1"}


def test_a_pin_wins_and_moves_an_existing_node() -> None:
    existing = {"n1": ("hv1", Load("n1", 1024, 1))}
    assert place([req("n1", pin="hv2")], HOSTS, {}, existing) == {"n1": "hv2"}


def test_a_pool_bound_to_hosts_stays_there() -> None:
    capacity = {"hv1": Capacity(memory_mib=100_000), "hv2": Capacity(memory_mib=1024)}
    placed = place([req("a", allowed=("hv2",))], HOSTS, capacity, {})
    assert placed == {"a": "hv2"}
    with pytest.raises(UsageError, match="bound to hv2, not hv1"):
        place([req("a", pin="hv1", allowed=("hv2",))], HOSTS, capacity, {})


def test_capacity_is_respected() -> None:
    capacity = {"hv1": Capacity(nodes=1), "hv2": Capacity(nodes=1)}
    assert set(place([req("a"), req("b")], HOSTS, capacity, {}).values()) == {"hv1", "hv2"}
    with pytest.raises(UsageError, match="c fits on no host: hv1 has room for 1"):
        place([req("a"), req("b"), req("c")], HOSTS, capacity, {})
    with pytest.raises(UsageError, match="does not fit on hv1"):
        place([req("a", pin="hv1"), req("b", pin="hv1")], HOSTS, capacity, {})
    with pytest.raises(UsageError, match="memory budget is 512 MiB"):
        place([req("a", pin="hv1")], HOSTS, {"hv1": Capacity(memory_mib=512)}, {})


def test_an_unknown_host_is_named() -> None:
    with pytest.raises(UsageError, match="no host 'hv9'"):
        place([req("a", pin="hv9")], HOSTS, {}, {})


def test_budgets_default_to_the_hosts_own_memory() -> None:
    assert capacity_of(Host(name="h"), 16384, 8) == Capacity(None, 16384, None)
    configured = Host(name="h", max_nodes=3, max_memory=2048, max_vcpus=4)
    assert capacity_of(configured, 16384, 8) == Capacity(3, 2048, 4)


def test_specs_pin_a_host() -> None:
    ref = parse_spec("3:d12@hv2", POOLS)
    assert (ref.name, ref.distro, ref.host) == ("vnode03", "d12", "hv2")
    assert parse_spec("vnode04@hv1", POOLS).host == "hv1"
    assert parse_spec("5", POOLS).host is None
    with pytest.raises(UsageError, match="host is not expected"):
        parse_specs(["4@hv1"], POOLS, allow_distro=False)


def test_a_range_pins_every_node_of_it() -> None:
    refs = parse_specs(["1-3:d13@hv2", "4@hv1"], POOLS)
    assert [(r.name, r.distro, r.host) for r in refs] == [
        ("vnode01", "d13", "hv2"),
        ("vnode02", "d13", "hv2"),
        ("vnode03", "d13", "hv2"),
        ("vnode04", None, "hv1"),
    ]
    with pytest.raises(UsageError, match="expected"):
        parse_spec("3@", POOLS)


def test_hosts_config_is_checked() -> None:
    config = build_config(
        {
            "hosts": [
                {"name": "hv1", "uri": "qemu:///system"},
                {"name": "hv2", "uri": "qemu+ssh://root@hv2/system", "max_nodes": 16},
            ],
            "pools": [{"stem": "vnode", "hosts": ["hv2"]}],
        }
    )
    assert [h.name for h in config.hosts] == ["hv1", "hv2"]
    assert config.hosts[1].max_nodes == 16
    assert config.pools[0].hosts == ["hv2"]
    assert build_config({}).hosts == ()
    with pytest.raises(UsageError, match="used twice"):
        build_config({"hosts": [{"name": "a", "uri": "x:///"}, {"name": "a", "uri": "y:///"}]})
    with pytest.raises(UsageError, match="unknown host"):
        build_config({"hosts": [{"name": "a"}], "pools": [{"stem": "v", "hosts": ["b"]}]})
    with pytest.raises(UsageError, match="unknown key"):
        build_config({"hosts": [{"name": "a", "ram": 3}]})
    with pytest.raises(UsageError, match="overlapping subnets"):
        build_config(
            {
                "hosts": [
                    {"name": "a", "uri": "x:///", "subnet": "10.0.0.0/24"},
                    {"name": "b", "uri": "y:///", "subnet": "10.0.0.128/25"},
                ]
            }
        )


def test_a_lab_without_hosts_is_one_implicit_host() -> None:
    config = build_config({"defaults": {"uri": "qemu:///session"}})
    (host,) = lab_hosts(config)
    assert (host.name, host.uri, host.pool) == (LOCAL, "qemu:///session", None)
    listed = build_config({"hosts": [{"name": "hv1"}, {"name": "hv2", "uri": "test:///x"}]})
    assert [h.name for h in lab_hosts(listed)] == ["hv1", "hv2"]


def test_the_implicit_host_has_no_budget_a_listed_one_has_its_memory() -> None:
    (implicit,) = lab_hosts(build_config({}))
    assert capacity_of(implicit, 2048, 2) == Capacity()
    assert capacity_of(Host(name="hv1"), 2048, 2) == Capacity(memory_mib=2048)


def test_the_labs_own_host_keeps_the_labs_state_whatever_it_is_called(tmp_path: Path) -> None:
    local = "qemu:///system"
    assert state_dir(tmp_path, Host(name=LOCAL, uri=local, pool=None), local) == tmp_path
    assert state_dir(tmp_path, Host(name="hv1", uri=local), local) == tmp_path
    remote = Host(name="hv2", uri="qemu+ssh://hv2/system")
    assert state_dir(tmp_path, remote, local) == tmp_path / "hosts" / "hv2"


def test_records_kept_under_the_old_per_host_directory_are_adopted(tmp_path: Path) -> None:
    legacy = tmp_path / "hosts" / "hv1" / "networks"
    legacy.mkdir(parents=True)
    (legacy / "vnode.uuid").write_text("uuid-from-hosts")
    (legacy / "both.uuid").write_text("old")
    (tmp_path / "networks").mkdir()
    (tmp_path / "networks" / "both.uuid").write_text("current")
    adopt_legacy_state(tmp_path, Host(name="hv1"), "qemu:///system")
    assert (tmp_path / "networks" / "vnode.uuid").read_text() == "uuid-from-hosts"
    # What both places hold: the one in use wins, the other stays where it was.
    assert (tmp_path / "networks" / "both.uuid").read_text() == "current"
    assert (legacy / "both.uuid").read_text() == "old"
    assert not (legacy / "vnode.uuid").exists()


def test_a_host_is_local_when_its_uri_names_no_machine() -> None:
    assert Host(name="a", uri="qemu:///system").is_local
    assert not Host(name="b", uri="qemu+ssh://root@hv2/system").is_local
