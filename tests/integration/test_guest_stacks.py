"""Guests whose network stack is Fedora's or Ubuntu's, booted through vnode.

Fedora guests configure their NIC with NetworkManager (cloud-init's network-manager
renderer), Ubuntu's with netplan and systemd-networkd; both run cloud-init 24-25.x. Debian 13
has all of these: `d13` is built like Debian's own trixie cloud images (netplan, networkd,
resolved: Ubuntu's stack), `d13-nm` with NetworkManager (Fedora's). One node of each boots in
one `vnode up` on the lab's libvirt network, with the static address vnode's network-config
gives by MAC; every check reads the booted guests. The images are built once into the image
store (`make guest-images`, a prerequisite of `make test`).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest

from tests.conftest import IMAGE_STORE, Lab, cleanup_lab, make_lab
from tests.integration.conftest import pool_mac, settle

pytestmark = pytest.mark.integration


@attrs.frozen
class Stack:
    number: int
    distro: str
    renderer: str  # how cloud-init wrote the NIC's configuration
    config_glob: str  # the file(s) it wrote
    daemon: str  # the service that applied it


STACKS = (
    Stack(1, "d13", "netplan", "/etc/netplan/50-cloud-init.yaml", "systemd-networkd"),
    Stack(
        2,
        "d13-nm",
        "network-manager",
        "/etc/NetworkManager/system-connections/cloud-init-*.nmconnection",
        "NetworkManager",
    ),
)
NIC = "vnode0"  # network-config's set-name: the NIC's name on every renderer

# Everything a check needs, in one SSH round trip per node (guests under TCG are slow).
PROBE = r"""
echo "== hostname"; hostname
echo "== fqdn"; hostname --fqdn
echo "== links"; ip -o link show | awk -F': ' '{print $2}'
echo "== addresses"; ip -4 -o addr show scope global
echo "== routes"; ip -4 route show
echo "== resolv"; cat /etc/resolv.conf
echo "== files"; ls -1d %(glob)s 2>&1
echo "== content"; cat %(glob)s 2>&1
echo "== other"; ls -1d /etc/netplan/*.yaml /etc/NetworkManager/system-connections/* \
  /etc/network/interfaces.d/* /etc/systemd/network/*.network \
  /run/systemd/network/*.network 2>/dev/null
echo "== ifupdown"; command -v ifup || echo none
echo "== active"; systemctl is-active %(daemon)s
echo "== managers"; for unit in NetworkManager systemd-networkd networking; do \
  printf '%%s %%s\n' "$unit" "$(systemctl is-active $unit)"; done
echo "== cloud-init"; cloud-init --version 2>&1
echo "== status"; cloud-init status --long 2>&1 | grep -E '^(status|errors|recoverable)' -A3
echo "== end"
"""


def sections(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith("== "):
            name = line[3:]
            found[name] = ""
        elif name:
            found[name] += line + "\n"
    return found


@pytest.fixture(scope="module")
def stacks_lab(host_ready: None) -> Iterator[Lab]:
    missing = [s.distro for s in STACKS if not (IMAGE_STORE / f"{s.distro}.qcow2").exists()]
    if missing:
        pytest.fail(f"images missing in {IMAGE_STORE}: {missing}: run `make guest-images` first")
    made = make_lab("st")
    try:
        yield made
    finally:
        cleanup_lab(made)


@pytest.fixture(scope="module")
def booted(stacks_lab: Lab) -> dict[int, dict[str, str]]:
    """Both stacks in one `vnode up` (they boot in parallel); each node's probe, by number."""
    specs = [f"{s.number}:{s.distro}" for s in STACKS]
    # Generous: on a loaded 2-core host TCG guests took 6-8 min to answer SSH.
    code, nodes = stacks_lab.run_json(
        "up", *specs, "--memory", "768", "--timeout", "540", timeout=900
    )
    assert code == 0, nodes
    assert all(node["state"] == "ready" for node in nodes), nodes
    settle(stacks_lab, [s.number for s in STACKS])
    probes = {}
    for stack in STACKS:
        result = stacks_lab.ssh(
            str(stack.number), PROBE % {"glob": stack.config_glob, "daemon": stack.daemon}
        )
        assert "== end" in result.stdout, result.stdout + result.stderr
        probes[stack.number] = sections(result.stdout)
    return probes


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: s.distro)
def test_the_nic_has_the_static_address_by_mac_and_the_node_its_name(
    stacks_lab: Lab, booted: dict, stack: Stack
) -> None:
    probe = booted[stack.number]
    assert probe["hostname"].strip() == stacks_lab.name(stack.number)
    assert probe["fqdn"].strip() == f"{stacks_lab.name(stack.number)}.lab"
    # Renamed by set-name, so the address sits on vnode0, not the kernel's ens3/enp1s0.
    assert NIC in probe["links"].split()
    addresses = probe["addresses"].strip().splitlines()
    assert len(addresses) == 1, addresses
    assert (
        f" {NIC} " in addresses[0] and f"inet {stacks_lab.ip_of(stack.number)}/24" in (addresses[0])
    )


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: s.distro)
def test_routes_and_dns_are_what_network_config_says(
    stacks_lab: Lab, booted: dict, stack: Stack
) -> None:
    probe = booted[stack.number]
    # The lab network has no forward, so network-config gives no gateway: no default route,
    # only the subnet's, on vnode0.
    assert "default" not in probe["routes"], probe["routes"]
    assert f"{stacks_lab.subnet_prefix}.0/24 dev {NIC}" in probe["routes"]
    resolv = probe["resolv"]
    assert f"nameserver {stacks_lab.subnet_prefix}.1" in resolv, resolv
    assert "search lab" in resolv, resolv


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: s.distro)
def test_the_intended_renderer_wrote_the_config_and_its_daemon_applied_it(
    stacks_lab: Lab, booted: dict, stack: Stack
) -> None:
    probe = booted[stack.number]
    written = probe["files"].split()
    assert len(written) == 1 and "No such file" not in probe["files"], probe["files"]
    content = probe["content"]
    # Matched by the node's MAC (YAML may quote it; keyfiles write it in capitals).
    assert pool_mac(stacks_lab, stack.number).upper() in content.upper(), content
    if stack.renderer == "netplan":
        assert "set-name:" in content and NIC in content, content
    # Nothing of the other stacks: no ifupdown, no other manager's files.
    assert probe["ifupdown"].strip() == "none"
    others = set(probe["other"].split()) - set(written)
    if stack.renderer == "netplan":
        # netplan's own output for networkd, generated at boot.
        others = {o for o in others if not o.startswith("/run/systemd/network/")}
    assert not others, others
    assert probe["active"].strip() == "active"
    managers = dict(line.split() for line in probe["managers"].strip().splitlines())
    assert [unit for unit, state in managers.items() if state == "active"] == [stack.daemon]


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: s.distro)
def test_cloud_init_25_accepts_the_seed_vnode_rendered(
    stacks_lab: Lab, booted: dict, stack: Stack
) -> None:
    probe = booted[stack.number]
    version = probe["cloud-init"].split()[-1]
    assert int(version.split(".")[0]) >= 24, probe["cloud-init"]
    assert probe["status"].startswith("status: done"), probe["status"]
    # The guest's own cloud-init validates what vnode rendered: user-data against its
    # cloud-config schema, network-config against its v2 schema (through netplan's parser
    # where netplan is installed).
    result = stacks_lab.ssh(
        str(stack.number),
        "cloud-init schema --system 2>&1; echo rc=$?",
    )
    out = result.stdout
    assert out.rstrip().endswith("rc=0"), out
    assert "Valid schema user-data" in out, out
    assert "Invalid" not in out and "Error" not in out, out
    assert "network-config" in out, out
