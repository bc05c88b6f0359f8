"""The network-config vnode renders, turned into each guest's own files by cloud-init's
`devel net-convert` (Debian 12's cloud-init 22.4, unpacked by `make cloud-init`): every
renderer must configure the NIC that really exists, the one with the node's MAC, renamed to
vnode's name by cloud-init before networking starts."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import tempfile
from pathlib import Path

import attrs
import pytest
import yaml

from tests.conftest import REPO
from vnode.cloudinit import GUEST_NIC, render_seed
from vnode.keys import generate_keypair
from vnode.model import Distro, NodePlan, StaticAddress

SITE = REPO / ".venv/cloud-init/root/usr/lib/python3/dist-packages"
MAC = "52:54:00:00:00:03"
ADDRESS = StaticAddress(
    ip="10.0.0.103", prefix=24, gateway="10.0.0.1", dns=("10.0.0.1",), search=("lab",)
)

# Debian's python3 runs cloud-init's own code (-I: nothing leaks in from the venv); it prints
# the renamings cloud-init applies at boot (extract_physdevs) so the test sees them too.
# cloud-init is told that no interface exists yet: it would read this host's otherwise, and
# it refuses to run while two of them share a MAC (the taps of a running guest's NICs can:
# libvirt gives a tap the guest's MAC with fe first).
NET_CONVERT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import yaml
import cloudinit.net
import cloudinit.net.network_state
from cloudinit.cmd.main import main
from cloudinit.net import extract_physdevs
config, distro, out, kind = sys.argv[2:6]
with open(config) as handle:
    physdevs = extract_physdevs(yaml.safe_load(handle))
for module in (cloudinit.net, cloudinit.net.network_state):
    module.get_interfaces_by_mac = lambda *args, **kwargs: {}
sys.argv = ["cloud-init", "devel", "net-convert", "-p", config, "-k", "yaml", "-D", distro,
            "-d", out, "-O", kind]
code = main()
print(json.dumps(physdevs))
sys.exit(code)
"""


def _network_config(address: StaticAddress | None) -> str:
    distro = Distro(name="d12", family="debian", release="12", title="t", osinfo="o")
    node = NodePlan(
        name="vnode03",
        number=3,
        pool="vnode",
        mac=MAC,
        distro=distro,
        memory_mib=1024,
        vcpus=1,
        disk_gb=10,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=Path("/nonexistent"),
        address=address,
    )
    key = generate_keypair("test")
    return render_seed(node, authorized_key="ssh-ed25519 AAAA test", host_key=key).network_config


def net_convert(text: str, distro: str, kind: str) -> tuple[dict[str, str], list]:
    if not (SITE / "cloudinit").is_dir():
        missing = f"cloud-init is not unpacked at {SITE}: run `make cloud-init`"
        # `make test` and `make unit` unpack it first: there, its absence is a failure.
        if os.environ.get("VNODE_TEST_REQUIRE_CLOUD_INIT"):
            pytest.fail(missing)
        pytest.skip(missing)
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "network-config"
        config.write_text(text)
        out = Path(work) / "out"
        command = [str(SITE), str(config), distro, str(out), kind]
        result = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", NET_CONVERT, *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        files = {
            "/" + str(path.relative_to(out)): path.read_text()
            for path in out.rglob("*")
            if path.is_file()
        }
    return files, json.loads(result.stdout.strip().splitlines()[-1])


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@pytest.fixture(scope="module")
def static() -> str:
    return _network_config(ADDRESS)


def test_cloud_init_renames_the_nic_with_the_nodes_mac(static: str) -> None:
    _, renames = net_convert(static, "debian", "eni")
    assert [rename[:2] for rename in renames] == [[MAC, GUEST_NIC]]


def test_eni_configures_the_renamed_nic(static: str) -> None:
    files, _ = net_convert(static, "debian", "eni")
    stanzas = files["/etc/network/interfaces.d/50-cloud-init"]
    assert f"auto {GUEST_NIC}\niface {GUEST_NIC} inet static" in stanzas
    assert "address 10.0.0.103/24" in stanzas
    rule = files["/etc/udev/rules.d/70-persistent-net.rules"]
    assert f'ATTR{{address}}=="{MAC}", NAME="{GUEST_NIC}"' in rule


def test_sysconfig_names_the_renamed_nic_and_its_mac(static: str) -> None:
    files, _ = net_convert(static, "fedora", "sysconfig")
    ifcfg = dict(
        line.split("=", 1)
        for line in files[f"/etc/sysconfig/network-scripts/ifcfg-{GUEST_NIC}"].splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert (ifcfg["DEVICE"], ifcfg["HWADDR"]) == (GUEST_NIC, MAC)
    assert (ifcfg["BOOTPROTO"], ifcfg["IPADDR"], ifcfg["GATEWAY"]) == (
        "none",
        "10.0.0.103",
        "10.0.0.1",
    )


def test_networkd_matches_the_renamed_nic_by_name_and_mac(static: str) -> None:
    files, _ = net_convert(static, "fedora", "networkd")
    unit = _ini(files[f"/etc/systemd/network/10-cloud-init-{GUEST_NIC}.network"])
    assert (unit["Match"]["Name"], unit["Match"]["MACAddress"]) == (GUEST_NIC, MAC)
    assert unit["Address"]["Address"] == "10.0.0.103/24"
    assert unit["Network"]["DNS"] == "10.0.0.1"


def test_network_manager_keyfile_is_bound_to_the_mac(static: str) -> None:
    files, _ = net_convert(static, "fedora", "network-manager")
    keyfile = _ini(
        files[f"/etc/NetworkManager/system-connections/cloud-init-{GUEST_NIC}.nmconnection"]
    )
    assert keyfile["ethernet"]["mac-address"] == MAC
    assert (keyfile["ipv4"]["method"], keyfile["ipv4"]["address1"]) == (
        "manual",
        "10.0.0.103/24",
    )
    assert keyfile["ipv4"]["route1"] == "0.0.0.0/0,10.0.0.1"


def test_netplan_matches_by_mac_and_sets_the_name(static: str) -> None:
    files, _ = net_convert(static, "ubuntu", "netplan")
    plan = yaml.safe_load(files["/etc/netplan/50-cloud-init.yaml"])["network"]
    nic = plan["ethernets"][GUEST_NIC]
    assert nic["match"] == {"macaddress": MAC}
    assert nic["set-name"] == GUEST_NIC
    assert nic["addresses"] == ["10.0.0.103/24"]


@pytest.mark.parametrize(
    ("distro", "kind", "path", "words"),
    [
        (
            "debian",
            "eni",
            "/etc/network/interfaces.d/50-cloud-init",
            f"iface {GUEST_NIC} inet dhcp",
        ),
        (
            "fedora",
            "sysconfig",
            f"/etc/sysconfig/network-scripts/ifcfg-{GUEST_NIC}",
            "BOOTPROTO=dhcp",
        ),
        (
            "fedora",
            "networkd",
            f"/etc/systemd/network/10-cloud-init-{GUEST_NIC}.network",
            "DHCP=ipv4",
        ),
        (
            "fedora",
            "network-manager",
            f"/etc/NetworkManager/system-connections/cloud-init-{GUEST_NIC}.nmconnection",
            "method=auto",
        ),
        ("ubuntu", "netplan", "/etc/netplan/50-cloud-init.yaml", "dhcp4: true"),
    ],
)
def test_dhcp_is_rendered_for_the_renamed_nic_by_every_renderer(
    distro: str, kind: str, path: str, words: str
) -> None:
    files, renames = net_convert(_network_config(None), distro, kind)
    assert words in files[path]
    assert [rename[:2] for rename in renames] == [[MAC, GUEST_NIC]]


@pytest.mark.parametrize(
    ("distro", "kind", "path", "wanted"),
    [
        (
            "debian",
            "eni",
            "/etc/network/interfaces.d/50-cloud-init",
            "address fd52:5400:150::103/64",
        ),
        (
            "debian",
            "networkd",
            f"/etc/systemd/network/10-cloud-init-{GUEST_NIC}.network",
            "Address=fd52:5400:150::103/64",
        ),
        (
            "fedora",
            "network-manager",
            f"/etc/NetworkManager/system-connections/cloud-init-{GUEST_NIC}.nmconnection",
            "address1=fd52:5400:150::103/64",
        ),
        ("ubuntu", "netplan", "/etc/netplan/50-cloud-init.yaml", "fd52:5400:150::103/64"),
    ],
)
def test_a_dual_stack_address_reaches_every_guest_stack(
    distro: str, kind: str, path: str, wanted: str
) -> None:
    dual = attrs.evolve(ADDRESS, ip6="fd52:5400:150::103", prefix6=64)
    files, _ = net_convert(_network_config(dual), distro, kind)
    assert wanted in files[path] and "10.0.0.103/24" in files[path], files[path]


# A node with a further NIC on an isolated storage network (static) and one on a site network
# (DHCP): each configured by its MAC under its own name, only the first with route and DNS.
SECOND_MAC, THIRD_MAC = "56:54:00:00:00:03", "5a:54:00:00:00:03"
STORAGE = StaticAddress(ip="10.8.0.103", prefix=24, dns=("10.8.0.1",), search=("storage",))


def _three_nics() -> str:
    from vnode.model import Interface, Nic

    nics = (
        Nic("libvirt:storage", SECOND_MAC, Interface("network", {"network": "s"}), STORAGE),
        Nic("bridge:br0", THIRD_MAC, Interface("bridge", {"bridge": "br0"}), None),
    )
    distro = Distro(name="d12", family="debian", release="12", title="t", osinfo="o")
    node = NodePlan(
        name="vnode03",
        number=3,
        pool="vnode",
        mac=MAC,
        distro=distro,
        memory_mib=1024,
        vcpus=1,
        disk_gb=10,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=Path("/nonexistent"),
        address=ADDRESS,
        nics=nics,
    )
    key = generate_keypair("test")
    return render_seed(node, authorized_key="ssh-ed25519 AAAA test", host_key=key).network_config


@pytest.fixture(scope="module")
def three() -> str:
    return _three_nics()


def test_every_nic_is_renamed_by_its_mac(three: str) -> None:
    ethernets = yaml.safe_load(three)["ethernets"]
    assert {name: nic["match"]["macaddress"] for name, nic in ethernets.items()} == {
        "vnode0": MAC,
        "vnode1": SECOND_MAC,
        "vnode2": THIRD_MAC,
    }
    _, renames = net_convert(three, "debian", "eni")
    assert sorted(rename[:2] for rename in renames) == sorted(
        [[MAC, "vnode0"], [SECOND_MAC, "vnode1"], [THIRD_MAC, "vnode2"]]
    )


def test_eni_configures_every_nic_route_and_dns_on_the_first(three: str) -> None:
    files, _ = net_convert(three, "debian", "eni")
    stanzas = files["/etc/network/interfaces.d/50-cloud-init"]
    blocks = {b.split()[0]: b for b in stanzas.split("\nauto ")[1:]}
    assert "iface vnode1 inet static" in blocks["vnode1"]
    assert "address 10.8.0.103/24" in blocks["vnode1"]
    assert "route" not in blocks["vnode1"] and "dns-" not in blocks["vnode1"]
    assert "iface vnode2 inet dhcp" in blocks["vnode2"]
    assert "dns-nameservers 10.0.0.1" in blocks["vnode0"]
    assert "route add default gw 10.0.0.1" in blocks["vnode0"]
    rules = files["/etc/udev/rules.d/70-persistent-net.rules"]
    for mac, name in ((MAC, "vnode0"), (SECOND_MAC, "vnode1"), (THIRD_MAC, "vnode2")):
        assert f'ATTR{{address}}=="{mac}", NAME="{name}"' in rules


def test_networkd_has_a_unit_per_nic_bound_to_its_mac(three: str) -> None:
    files, _ = net_convert(three, "debian", "networkd")
    units = {}
    for index, mac in enumerate((MAC, SECOND_MAC, THIRD_MAC)):
        name = f"vnode{index}"
        units[name] = _ini(files[f"/etc/systemd/network/10-cloud-init-{name}.network"])
        assert (units[name]["Match"]["Name"], units[name]["Match"]["MACAddress"]) == (name, mac)
    assert units["vnode1"]["Address"]["Address"] == "10.8.0.103/24"
    assert "DNS" not in units["vnode1"]["Network"] and "Route" not in units["vnode1"]
    assert units["vnode2"]["Network"]["DHCP"] == "ipv4"
    assert units["vnode0"]["Route"]["Gateway"] == "10.0.0.1"


def test_network_manager_has_a_keyfile_per_nic_bound_to_its_mac(three: str) -> None:
    files, _ = net_convert(three, "fedora", "network-manager")
    path = "/etc/NetworkManager/system-connections/cloud-init-{}.nmconnection"
    keyfiles = {n: _ini(files[path.format(n)]) for n in ("vnode0", "vnode1", "vnode2")}
    assert [k["ethernet"]["mac-address"].lower() for k in keyfiles.values()] == [
        MAC,
        SECOND_MAC,
        THIRD_MAC,
    ]
    storage = keyfiles["vnode1"]["ipv4"]
    assert (storage["method"], storage["address1"]) == ("manual", "10.8.0.103/24")
    assert "route1" not in storage and "dns" not in storage
    assert keyfiles["vnode2"]["ipv4"]["method"] == "auto"
    assert keyfiles["vnode0"]["ipv4"]["route1"] == "0.0.0.0/0,10.0.0.1"


def test_netplan_matches_every_nic_by_mac(three: str) -> None:
    files, _ = net_convert(three, "ubuntu", "netplan")
    ethernets = yaml.safe_load(files["/etc/netplan/50-cloud-init.yaml"])["network"]["ethernets"]
    assert {n: (e["match"]["macaddress"], e["set-name"]) for n, e in ethernets.items()} == {
        "vnode0": (MAC, "vnode0"),
        "vnode1": (SECOND_MAC, "vnode1"),
        "vnode2": (THIRD_MAC, "vnode2"),
    }
    assert ethernets["vnode1"]["addresses"] == ["10.8.0.103/24"]
    assert "routes" not in ethernets["vnode1"] and "nameservers" not in ethernets["vnode1"]
    assert ethernets["vnode2"]["dhcp4"] is True


def test_a_node_with_room_for_vcpus_onlines_those_plugged_in_later() -> None:
    node = NodePlan(
        name="vnode01",
        number=1,
        pool="vnode",
        mac="52:54:00:00:00:01",
        distro=Distro(name="d12", family="debian", release="12", title="Debian 12", osinfo="x"),
        memory_mib=1024,
        vcpus=1,
        disk_gb=10,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=Path("/nonexistent"),
    )
    key = generate_keypair("test")

    def files(plan: NodePlan) -> list[dict]:
        seed = render_seed(plan, authorized_key="ssh-ed25519 AAAA test", host_key=key)
        return yaml.safe_load(seed.user_data).get("write_files", [])

    assert files(node) == []
    (rule,) = files(attrs.evolve(node, max_vcpus=4))
    assert rule["path"] == "/etc/udev/rules.d/80-vnode-cpu-hotplug.rules"
    assert 'SUBSYSTEM=="cpu", ACTION=="add"' in rule["content"]
    assert 'ATTR{online}="1"' in rule["content"]
