"""A node attached through macvtap to a veth whose far end is the site (a network namespace
with the site's dnsmasq). The host reaches the node only through its own macvlan on the veth,
which is the documented way around macvtap's blind spot; without one, vnode warns.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.integration.conftest import Site, in_namespace, ip, settle
from vnode_plugins._hostnet import SiteAddresses, SiteSettings
from vnode_plugins.direct import DirectNetwork

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(direct_site: Site) -> tuple[dict, str]:
    """`vnode up 1` on the macvtap parent; its --json object and what it said on stderr."""
    result = direct_site.lab.run("up", "1", "--json")
    assert result.returncode == 0, result.stderr
    settle(direct_site.lab, [1])
    return json.loads(result.stdout)[0], result.stderr


def test_node_is_ready_at_its_reserved_address(direct_site: Site, node: tuple[dict, str]) -> None:
    obj, stderr = node
    host = direct_site.reservation(1)
    assert obj["state"] == "ready", obj
    assert obj["ip"] == host.ip
    # The host has a macvlan on the parent, so it can reach the node: no warning then.
    assert "macvtap on" not in stderr


def test_the_site_gave_the_node_its_lease(direct_site: Site, node: tuple[dict, str]) -> None:
    host = direct_site.reservation(1)
    leases = direct_site.leases.read_text().split()
    assert host.mac in leases
    assert leases[leases.index(host.mac) + 1] == host.ip


def test_the_node_answers_ssh_from_inside_the_site(
    direct_site: Site, node: tuple[dict, str]
) -> None:
    assert direct_site.namespace
    host = direct_site.reservation(1)
    result = in_namespace(
        direct_site.namespace,
        f"timeout 10 bash -c 'exec 3<>/dev/tcp/{host.ip}/22; head -c 7 <&3'; "
        f"ip neigh show {host.ip}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SSH-2.0")
    assert host.mac in result.stdout.lower()


def test_vnode_ssh_and_list_reach_the_node(direct_site: Site, node: tuple[dict, str]) -> None:
    host = direct_site.reservation(1)
    result = direct_site.lab.ssh("1", "hostname; ip -4 -o addr show scope global")
    assert result.returncode == 0, result.stderr
    hostname, addresses = result.stdout.split("\n", 1)
    assert hostname == host.name
    assert f"inet {host.ip}/24" in addresses
    code, nodes = direct_site.lab.run_json("list")
    assert code == 0
    assert nodes[0]["ip"] == host.ip
    assert nodes[0]["network"] == f"direct:{direct_site.device}"


def test_doctor_sees_the_parent_and_the_hosts_way_in(direct_site: Site) -> None:
    result = direct_site.lab.run("doctor", "--json")
    verdicts = {v["check"]: v for v in json.loads(result.stdout)}
    assert verdicts["direct"]["status"] == "ok", verdicts["direct"]
    assert verdicts["site dns"]["status"] == "ok", verdicts["site dns"]


def test_up_refuses_unusable_parents(direct_site: Site) -> None:
    for args, words in (
        (["--direct", "vtnonic0"], "does not exist"),
        (["--direct", "lo"], "loopback"),
        (["--network", "direct:"], "needs a parent device"),
        (["--direct", "x/y"], "not a network device name"),
    ):
        result = direct_site.lab.run("up", "5", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_vnode_warns_when_the_host_cannot_reach_macvtap_nodes(
    direct_site: Site, veth: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    parent, _ = veth
    ip("link", "set", parent, "up")
    backend = DirectNetwork(parent, SiteAddresses.from_settings(SiteSettings(), None))
    with caplog.at_level(logging.WARNING, logger="vnode"):
        backend.check([])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"macvtap on {parent}" in warnings[0].vnode_event
    assert "--no-wait" in warnings[0].vnode_event
