"""Rendered XML and YAML are parsed back; hostile values must stay values."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pycdlib
import pytest
import yaml

from vnode import hypervisor, planning
from vnode.cloudinit import render_seed, write_seed_iso
from vnode.config import build_config
from vnode.domainxml import domain_xml
from vnode.errors import EnvironmentProblem
from vnode.keys import KeyPair, generate_keypair
from vnode.model import Distro, Interface, NodePlan, StaticAddress
from vnode.plugin import hookimpl
from vnode.plugins import PluginHost, PluginSource, entry_point_sources
from vnode.session import Session
from vnode.spec import parse_spec

HOSTILE = "evil\"'<b>&amp;: - x\n  injected: true\n#"
OSINFO = "http://debian.org/debian/12"
DISTRO = Distro(name="d12", family="debian", release="12", title=HOSTILE, osinfo=OSINFO)


class _HostileDistro:
    """A third party's distro plugin whose title is hostile: it must stay a value."""

    @staticmethod
    @hookimpl(tryfirst=True)
    def vnode_distro_resolve(name: str) -> Distro | None:
        return DISTRO if name == "d12" else None


def _session(state: Path, *extra: PluginSource) -> Session:
    host = PluginHost([*entry_point_sources(), *extra])
    return Session.for_config(build_config({"paths": {"state": str(state)}}), host)


def _planned(state: Path, network: str, spec: str = "3:d12") -> NodePlan:
    """A node's plan exactly as ``up`` makes it (less the libvirt virt-type probe)."""
    session = _session(state, PluginSource("hostile", lambda: _HostileDistro))
    backend = session.plugins.network_backend(network, session.plugin_context(connect=False))
    ref = parse_spec(spec, session.config.pools)
    return planning.plan_node(session, ref, session.config.defaults, backend, "qemu")


def _plan(name: str = "vnode03", tmp: Path = Path("/var/lib/vnode/nodes/vnode03")) -> NodePlan:
    return NodePlan(
        name=name,
        number=3,
        pool="vnode",
        mac="52:54:00:00:00:03",
        distro=DISTRO,
        memory_mib=1024,
        vcpus=2,
        disk_gb=10,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=tmp,
    )


@pytest.fixture(scope="module")
def host_key() -> KeyPair:
    return generate_keypair("test host key")


def test_domain_xml_escapes_values_and_carries_the_vnode_mark(tmp_path: Path) -> None:
    state = tmp_path / HOSTILE.replace("/", "_")
    plan = _planned(state, "bridge:br0")
    root = ET.fromstring(plan.domain_xml)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "vnode03"
    assert HOSTILE in root.findtext("title")
    ns = {"v": hypervisor.NAMESPACE, "o": "http://libosinfo.org/xmlns/libvirt/domain/1.0"}
    assert root.findtext("metadata/v:node/v:created-by", namespaces=ns) == "vnode"
    assert root.findtext("metadata/v:node/v:dir", namespaces=ns) == str(state / "nodes/vnode03")
    assert root.find("metadata/o:libosinfo/o:os", ns).get("id") == OSINFO
    disks = root.findall("devices/disk")
    assert [d.find("target").get("bus") for d in disks] == ["virtio", "virtio"]
    assert [d.find("source").get("file") for d in disks] == [
        str(plan.disk_path),
        str(plan.seed_path),
    ]
    assert disks[1].find("readonly") is not None
    assert root.find("devices/interface/mac").get("address") == "52:54:00:00:00:03"
    # The console plugin's place: where virtlogd may write on SELinux hosts too.
    assert (
        root.find("devices/serial/log").get("file") == "/var/log/libvirt/qemu/vnode03-console.log"
    )
    assert root.find("devices/graphics") is None
    assert root.findtext("sysinfo/system/entry[@name='serial']") == "ds=nocloud"
    assert root.find("devices/controller[@type='usb']").get("model") == "none"


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("bridge:br0", ("bridge", {"bridge": "br0"})),
        ("direct:eth0", ("direct", {"dev": "eth0", "mode": "bridge"})),
    ],
)
def test_each_network_plugin_describes_its_interface(
    tmp_path: Path, network: str, expected: tuple[str, dict[str, str]]
) -> None:
    nic = ET.fromstring(_planned(tmp_path, network).domain_xml).find("devices/interface")
    kind, source = expected
    assert nic.get("type") == kind
    assert nic.find("source").attrib == source


def test_an_interface_type_libvirt_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="type"):
        Interface(type="wormhole", source={"dev": "x"})


def test_an_interface_source_attribute_that_is_no_xml_name_is_refused(tmp_path: Path) -> None:
    plan = attrs.evolve(
        _planned(tmp_path, "bridge:br0"),
        interface=Interface(type="bridge", source={'bridge" x="': "br0"}),
    )
    with pytest.raises(EnvironmentProblem, match="not a libvirt <source> attribute"):
        domain_xml(_session(tmp_path).plugins, plan)


def test_plugins_adjust_the_domain_through_the_parsed_xml(tmp_path: Path) -> None:
    class SecondNic:
        @staticmethod
        @hookimpl
        def vnode_domain_xml(node: NodePlan, domain: ET.Element) -> None:
            nic = ET.SubElement(domain.find("devices"), "interface", type="network")
            ET.SubElement(nic, "source", network=f"storage-{node.name}")

    session = _session(tmp_path, PluginSource("second-nic", lambda: SecondNic))
    backend = session.plugins.network_backend("bridge:br0", session.plugin_context(connect=False))
    ref = parse_spec("3", session.config.pools)
    plan = planning.plan_node(session, ref, build_config({}).defaults, backend, "qemu")
    nics = ET.fromstring(plan.domain_xml).findall("devices/interface")
    assert [n.find("source").attrib for n in nics] == [
        {"bridge": "br0"},
        {"network": "storage-vnode03"},
    ]


def test_cloud_init_documents_parse_and_keep_hostile_values(host_key: KeyPair) -> None:
    address = StaticAddress(
        ip="10.0.0.103", prefix=24, gateway="10.0.0.1", dns=("10.0.0.1",), search=(HOSTILE,)
    )
    seed = render_seed(
        attrs.evolve(_plan(), address=address, dns_domain="lab"),
        authorized_key=f"ssh-ed25519 AAAA {HOSTILE}",
        host_key=host_key,
    )
    user = yaml.safe_load(seed.user_data)
    assert seed.user_data.startswith("#cloud-config\n")
    assert user["hostname"] == "vnode03"
    assert user["fqdn"] == "vnode03.lab"
    assert user["ssh_authorized_keys"] == [f"ssh-ed25519 AAAA {HOSTILE}"]
    assert user["ssh_keys"]["ed25519_private"] == host_key.private_openssh
    assert "ssh_pwauth" not in user and user["users"] == []
    assert "injected" not in user
    meta = yaml.safe_load(seed.meta_data)
    assert meta["local-hostname"] == "vnode03" and meta["instance-id"].startswith("vnode03-")
    net = yaml.safe_load(seed.network_config)
    nic = net["ethernets"]["vnode0"]
    assert nic["match"] == {"macaddress": "52:54:00:00:00:03"}
    assert nic["set-name"] == "vnode0"
    assert nic["addresses"] == ["10.0.0.103/24"]
    assert nic["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.0.1"}]
    assert nic["nameservers"] == {"addresses": ["10.0.0.1"], "search": [HOSTILE]}


@pytest.mark.parametrize(
    "comment", ["laptop \U0001f600 key", "caf\u00e9 \u2028 next \x85 \u00a0 \U0010fffd", "\ud83d"]
)
def test_characters_beyond_ascii_survive_yaml_as_they_were(host_key: KeyPair, comment: str) -> None:
    # An emoji in a key comment once came back as two lone surrogates and broke the seed.
    seed = render_seed(_plan(), authorized_key=f"ssh-ed25519 AAAA {comment}", host_key=host_key)
    assert seed.user_data.isascii()
    user = yaml.safe_load(seed.user_data)
    assert user["ssh_authorized_keys"] == [f"ssh-ed25519 AAAA {comment}"]


def test_without_a_static_address_the_nic_takes_dhcp(host_key: KeyPair) -> None:
    seed = render_seed(_plan(), authorized_key="ssh-ed25519 AAAA k", host_key=host_key)
    nic = yaml.safe_load(seed.network_config)["ethernets"]["vnode0"]
    assert nic == {
        "match": {"macaddress": "52:54:00:00:00:03"},
        "set-name": "vnode0",
        "dhcp4": True,
    }


def test_seed_iso_is_cidata_with_the_three_files_and_private(
    tmp_path: Path, host_key: KeyPair
) -> None:
    seed = render_seed(_plan(), authorized_key="ssh-ed25519 AAAA k", host_key=host_key)
    path = tmp_path / "seed.iso"
    write_seed_iso(path, seed)
    assert path.stat().st_mode & 0o777 == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    for name, text in seed.items():
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        assert out.getvalue().decode() == text
    iso.close()
