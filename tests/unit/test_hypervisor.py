"""The libvirt boundary's reading of vnode's marks and shapes: every field checked where it
is read (libvirt's test driver, test:///default, holds the domains: each connection is a
fresh host of its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnode import hypervisor

NODES = Path("/var/lib/vnode/nodes")
MARK = """<node>
  <created-by>vnode</created-by><created>2026-12-07T09:00:00+00:00</created>
  <pool>vnode</pool><number>3</number><distro>d12</distro><mac>52:54:00:00:00:03</mac>
  <network>libvirt:vnode</network><ip>{ip}</ip><dir>{dir}</dir>
  <console>/var/log/libvirt/qemu/vnode03-console.log</console>
  <shape><memory>512</memory><vcpus>1</vcpus><disk>10</disk><disks>1,2</disks>
    <image>{image}</image><lab>lab1</lab><tpm>no</tpm></shape>
</node>"""


@pytest.fixture
def conn():  # type: ignore[no-untyped-def]
    conn = hypervisor.connect("test:///default")
    yield conn
    conn.close()


def _domain(conn, name: str = "vnode03", **fields: str):  # type: ignore[no-untyped-def]
    libvirt = hypervisor.libvirt_module()
    values = {"ip": "10.0.0.3", "dir": f"{NODES}/{name}", "image": "ab" * 32, **fields}
    domain = conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory>524288</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    domain.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        MARK.format(**values),
        "vnode",
        hypervisor.NAMESPACE,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    return domain


def test_a_mark_is_read_back_whole(conn) -> None:  # type: ignore[no-untyped-def]
    mark = hypervisor.read_mark(_domain(conn))
    assert mark is not None and mark.damage is None
    assert (mark.name, mark.pool, mark.number, mark.ip) == ("vnode03", "vnode", 3, "10.0.0.3")
    shape = hypervisor.read_shape(_domain(conn, "vnode04", dir=f"{NODES}/vnode04"))
    assert shape is not None and shape.extra_disks == (1, 2) and shape.lab == "lab1"


@pytest.mark.parametrize(
    ("field", "value"),
    [("ip", "10.0.0.3; rm -rf /"), ("dir", "relative/path"), ("dir", "/x\n/y")],
)
def test_a_bad_field_is_blanked_and_the_address_distrusted(  # type: ignore[no-untyped-def]
    conn, field: str, value: str
) -> None:
    mark = hypervisor.read_mark(_domain(conn, **{field: value}))
    assert mark is not None and mark.damage and field in mark.damage
    assert mark.ip == ""  # nothing vouches for it: ssh and Ansible skip the node
    info = hypervisor.node_info(_domain(conn, "vnode05", **{field: value}), mark)
    assert info.state == "damaged"


def test_a_name_that_does_not_match_pool_and_number_is_damage(conn) -> None:  # type: ignore[no-untyped-def]
    mark = hypervisor.read_mark(_domain(conn, "other07"))
    assert mark is not None and "does not match" in str(mark.damage)
    assert (mark.pool, mark.number) == ("", -1)


def test_only_this_state_directorys_domains_are_vnodes(conn) -> None:  # type: ignore[no-untyped-def]
    _domain(conn)
    _domain(conn, "vnode06", dir="/var/lib/vnode-test-x/nodes/vnode06")
    assert [m.name for _, m in hypervisor.vnode_domains(conn, NODES)] == ["vnode03"]
    assert hypervisor.read_mark(conn.lookupByName("test")) is None  # the driver's own


@pytest.mark.parametrize(
    "shape",
    [
        "<node><shape><memory>0</memory><vcpus>1</vcpus><disk>1</disk></shape></node>",
        "<node><shape><memory>512</memory><vcpus>x</vcpus><disk>1</disk></shape></node>",
        "<node><shape><memory>1</memory><vcpus>1</vcpus><disk>1</disk><image>zz</image></shape></node>",
        "<node><shape><memory>1</memory><vcpus>1</vcpus><disk>1</disk><tpm>maybe</tpm></shape></node>",
        "<node/>",
        "not xml",
    ],
)
def test_a_shape_not_in_vnodes_form_is_unknown(shape: str) -> None:
    assert hypervisor.parse_shape(shape) is None


def test_virt_type_auto_and_bad_input(conn) -> None:  # type: ignore[no-untyped-def]
    assert hypervisor.resolve_virt_type(conn, "qemu") == "qemu"
    with pytest.raises(hypervisor.UsageError, match="unknown virt type"):
        hypervisor.resolve_virt_type(conn, "bogus")
