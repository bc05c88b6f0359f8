"""Rendered XML and YAML are parsed back; hostile values must stay values."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pycdlib
import pytest
import yaml

from vnode import hypervisor
from vnode.cloudinit import render_seed, write_seed_iso
from vnode.keys import KeyPair, generate_keypair
from vnode.model import ConsoleSetup, Distro, Interface, NodePlan, StaticAddress
from vnode.templating import render_xml

HOSTILE = "evil\"'<b>&amp;: - x\n  injected: true\n#"
DISTRO = Distro(name="d12", family="debian", release="12", title=HOSTILE, osinfo="debian12")


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


def _domain_xml(plan: NodePlan, interface: Interface) -> ET.Element:
    xml = render_xml(
        "domain.xml.j2",
        node=plan,
        virt_type=plan.virt_type,
        namespace=hypervisor.NAMESPACE,
        created="2026-01-01T00:00:00+00:00",
        ip="10.0.0.103",
        disk=plan.node_dir / "disk.qcow2",
        seed=plan.node_dir / "seed.iso",
        interface=interface,
        console=ConsoleSetup(log_path=plan.node_dir / "console.log"),
    )
    return ET.fromstring(xml)


def test_domain_xml_escapes_values_and_carries_the_vnode_mark() -> None:
    plan = _plan(tmp=Path(f"/var/lib/vnode/nodes/{HOSTILE}"))
    root = _domain_xml(plan, Interface(type="network", source="vnode"))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "vnode03"
    assert HOSTILE in root.findtext("title")
    ns = {"v": hypervisor.NAMESPACE}
    assert root.findtext("metadata/v:node/v:created-by", namespaces=ns) == "vnode"
    assert root.findtext("metadata/v:node/v:dir", namespaces=ns) == str(plan.node_dir)
    disks = root.findall("devices/disk")
    assert [d.find("target").get("bus") for d in disks] == ["virtio", "virtio"]
    assert disks[1].find("readonly") is not None
    assert root.find("devices/interface/mac").get("address") == "52:54:00:00:00:03"
    assert root.find("devices/serial/log").get("file") == str(plan.node_dir / "console.log")
    assert root.find("devices/graphics") is None
    assert root.findtext("sysinfo/system/entry[@name='serial']") == "ds=nocloud"
    assert root.find("devices/controller[@type='usb']").get("model") == "none"


@pytest.mark.parametrize(
    ("interface", "expected"),
    [
        (Interface(type="network", source="vnode"), ("network", "network", "vnode")),
        (Interface(type="bridge", source="br0"), ("bridge", "bridge", "br0")),
        (Interface(type="direct", source="eth0", mode="bridge"), ("direct", "dev", "eth0")),
    ],
)
def test_each_interface_kind_renders(interface: Interface, expected: tuple[str, str, str]) -> None:
    root = _domain_xml(_plan(), interface)
    nic = root.find("devices/interface")
    kind, attribute, value = expected
    assert nic.get("type") == kind
    assert nic.find("source").get(attribute) == value


def test_cloud_init_documents_parse_and_keep_hostile_values(host_key: KeyPair) -> None:
    address = StaticAddress(
        ip="10.0.0.103", prefix=24, gateway="10.0.0.1", dns=("10.0.0.1",), search=(HOSTILE,)
    )
    seed = render_seed(
        _plan(),
        authorized_key=f"ssh-ed25519 AAAA {HOSTILE}",
        host_key=host_key,
        address=address,
        domain="lab",
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
    assert nic["addresses"] == ["10.0.0.103/24"]
    assert nic["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.0.1"}]
    assert nic["nameservers"] == {"addresses": ["10.0.0.1"], "search": [HOSTILE]}


def test_without_a_static_address_the_nic_takes_dhcp(host_key: KeyPair) -> None:
    seed = render_seed(
        _plan(), authorized_key="ssh-ed25519 AAAA k", host_key=host_key, address=None
    )
    nic = yaml.safe_load(seed.network_config)["ethernets"]["vnode0"]
    assert nic == {"match": {"macaddress": "52:54:00:00:00:03"}, "dhcp4": True}


def test_seed_iso_is_cidata_with_the_three_files_and_private(
    tmp_path: Path, host_key: KeyPair
) -> None:
    seed = render_seed(
        _plan(), authorized_key="ssh-ed25519 AAAA k", host_key=host_key, address=None
    )
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
