"""Warm templates without a guest: the key, the store, the warm/cold decision, the CLI's
input errors (libvirt's test driver stands in for the host)."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest
import yaml

from vnode import planning, warm, warmstore
from vnode.cli import main
from vnode.config import build_config
from vnode.domainxml import plugin_adjusted
from vnode.errors import UsageError
from vnode.keys import generate_keypair
from vnode.model import Distro, Interface, NodePlan, StaticAddress
from vnode.plugin import hookimpl
from vnode.plugins import PluginHost, PluginSource, entry_point_sources
from vnode.session import Session
from vnode.spec import parse_spec
from vnode.warmstorage import StateFiles
from vnode_plugins.guest_network import network_files

DISTRO = Distro(name="d12", family="debian", release="12", title="Debian 12", osinfo="x")
SHAPE = warmstore.Shape(memory_mib=512, vcpus=1, virt_type="qemu", disk_gb=10)


def _key(**changes: object) -> str:
    fields = {
        "fingerprint": "sha256:aa",
        "shape": SHAPE,
        "agent": "abc",
        "libvirt": "9.0.0",
        "qemu": "7.2.0",
    }
    fields.update(changes)
    return warmstore.template_key(**fields)  # type: ignore[arg-type]


def test_key_is_stable_and_covers_everything_a_save_depends_on() -> None:
    assert _key() == _key() and len(_key()) == 16
    variants = [
        _key(fingerprint="sha256:bb"),
        _key(shape=attrs.evolve(SHAPE, memory_mib=1024)),
        _key(shape=attrs.evolve(SHAPE, vcpus=2)),
        _key(shape=attrs.evolve(SHAPE, virt_type="kvm")),
        _key(shape=attrs.evolve(SHAPE, disk_gb=20)),
        _key(agent="def"),
        _key(libvirt="10.0.0"),
        _key(qemu="8.2.0"),
    ]
    assert len({_key(), *variants}) == len(variants) + 1


def test_versions_are_dotted() -> None:
    assert warmstore._dotted(9_000_000) == "9.0.0"
    assert warmstore._dotted(7_002_001) == "7.2.1"


def test_image_fingerprint_uses_the_record_while_it_describes_the_image(tmp_path: Path) -> None:
    image = tmp_path / "d12.qcow2"
    image.write_bytes(b"QFI\xfb" + b"\0" * 100)
    assert warmstore.image_fingerprint(image).startswith("stat:")
    stat = image.stat()
    record = {
        "status": "built",
        "source": "x",
        "sha256": "ab" * 32,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "recorded": "now",
    }
    (tmp_path / "d12.qcow2.json").write_text(json.dumps(record))
    assert warmstore.image_fingerprint(image) == "sha256:" + "ab" * 32
    image.write_bytes(b"changed")  # the record no longer describes it
    assert warmstore.image_fingerprint(image).startswith("stat:")


def test_agent_version_is_a_digest_of_what_the_template_installs() -> None:
    assert len(warmstore.agent_version()) == 12


def test_template_user_data_installs_the_agent_files() -> None:
    text = warmstore.template_user_data()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    paths = {f["path"]: f for f in doc["write_files"]}
    assert paths["/usr/local/sbin/vnode-warm-agent"]["content"].startswith("#!/bin/sh")
    assert paths["/usr/local/sbin/vnode-warm-agent"]["permissions"] == "0755"
    assert "vnode-identity" in paths["/etc/udev/rules.d/99-vnode-identity.rules"]["content"]
    assert doc["users"] == [] and "vnode-template-finish" in str(doc["runcmd"])


# -- the store ----------------------------------------------------------------------------


def _record(state: Path, key: str, distro: str = "d12", **changes: object) -> Path:
    directory = warmstore.templates_dir(state) / key
    directory.mkdir(parents=True)
    (directory / "disk.qcow2").write_bytes(b"QFI\xfb")
    (directory / "state.save").write_bytes(b"LibvirtQemudSave")
    data = {
        "key": key,
        "distro": distro,
        "image": "/images/d12.qcow2",
        "image_fingerprint": "sha256:aa",
        "memory_mib": 512,
        "vcpus": 1,
        "virt_type": "qemu",
        "disk_gb": 10,
        "agent": "abc",
        "libvirt": "9.0.0",
        "qemu": "7.2.0",
        "made": "2026-12-03T09:00:00+00:00",
        "boot_seconds": 40.0,
        "save_bytes": 247 << 20,
        **changes,
    }
    (directory / "record.json").write_text(json.dumps(data))
    return directory


def _overlay(path: Path, backing: str) -> None:
    """A qcow2 header naming ``backing`` (what qemu-img create -b writes, less the rest)."""
    name = backing.encode()
    header = b"QFI\xfb" + struct.pack(">IQI", 3, 104, len(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"\0" * (104 - len(header)) + name)


def test_list_skips_unfinished_templates(tmp_path: Path) -> None:
    _record(tmp_path, "aaaa111122223333")
    unfinished = _record(tmp_path, "bbbb111122223333")
    (unfinished / "state.save").unlink()
    (warmstore.templates_dir(tmp_path) / "cccc111122223333").mkdir()  # no record yet
    listed = warmstore.list_templates(tmp_path)
    assert [r.key for r in listed] == ["aaaa111122223333"]
    assert listed[0].directory == str(warmstore.templates_dir(tmp_path) / "aaaa111122223333")
    assert warmstore.list_templates(tmp_path / "nothing") == []


def test_select_by_distro_key_or_key_prefix(tmp_path: Path) -> None:
    _record(tmp_path, "aaaa111122223333")
    _record(tmp_path, "bbbb111122223333", distro="d13")
    assert [r.key for r in warmstore.select_templates(tmp_path, "d13")] == ["bbbb111122223333"]
    assert [r.key for r in warmstore.select_templates(tmp_path, "aaaa1")] == ["aaaa111122223333"]
    with pytest.raises(UsageError, match="no template 'f43'"):
        warmstore.select_templates(tmp_path, "f43")
    with pytest.raises(UsageError):
        warmstore.select_templates(tmp_path, "a")  # too short to be a key


def test_a_template_nodes_run_on_is_not_removed(tmp_path: Path) -> None:
    directory = _record(tmp_path, "aaaa111122223333")
    [record] = warmstore.list_templates(tmp_path)
    nodes = tmp_path / "nodes"
    _overlay(nodes / "vnode01" / "disk.qcow2", str(directory / "disk.qcow2"))
    _overlay(nodes / "vnode02" / "disk.qcow2", "/var/lib/vnode/images/d12.qcow2")
    assert warmstore.users_of(record, nodes) == ["vnode01"]
    with pytest.raises(UsageError, match="base of vnode01"):
        warmstore.remove_template(record, nodes)
    assert directory.is_dir()
    (nodes / "vnode01" / "disk.qcow2").unlink()
    warmstore.remove_template(record, nodes)
    assert not directory.exists()


# -- warm or cold ---------------------------------------------------------------------------


def _plan(**changes: object) -> NodePlan:
    plan = NodePlan(
        name="vnode03",
        number=3,
        pool="vnode",
        mac="52:54:00:00:00:03",
        distro=DISTRO,
        memory_mib=512,
        vcpus=1,
        disk_gb=10,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=Path("/var/lib/vnode/nodes/vnode03"),
        interface=Interface(type="network", source={"network": "vnode"}),
        address=StaticAddress(
            ip="10.0.0.3", prefix=24, gateway="10.0.0.1", dns=("10.0.0.1",), search=("lab",)
        ),
        dns_domain="lab",
    )
    return attrs.evolve(plan, **changes)


def _storage(state: Path) -> StateFiles:
    # No libvirt: nothing here gets as far as booting.
    return StateFiles(conn=None, root=state / "templates", nodes_dir=state / "nodes", host="local")


def _spec(tmp_path: Path, shape: warmstore.Shape = SHAPE) -> warmstore.TemplateSpec:
    image = tmp_path / "d12.qcow2"
    image.write_bytes(b"QFI\xfb")
    return warmstore.plan_template(
        storage=_storage(tmp_path),
        distro=DISTRO,
        image=image,
        shape=shape,
        versions=("9.0.0", "7.2.0"),
        stem="wqvt",
    )


@pytest.mark.parametrize(
    ("changes", "adjusted", "cloud_init", "words"),
    [
        ({}, True, False, "vnode_domain_xml"),
        ({"user_cloud_config": "runcmd: [x]\n"}, False, False, "cloud-config"),
        ({}, False, True, "--wait-cloud-init"),
    ],
)
def test_cold_and_why(changes: dict, adjusted: bool, cloud_init: bool, words: str) -> None:
    reason = warmstore.cold_reason(
        _plan(**changes), hot_pluggable=True, plugin_adjusted=adjusted, wait_cloud_init=cloud_init
    )
    assert reason is not None and words in reason


def test_a_nic_its_backend_cannot_hot_plug_boots_cold() -> None:
    plan = _plan(interface=Interface(type="user"))
    reason = warmstore.cold_reason(
        plan, hot_pluggable=False, plugin_adjusted=False, wait_cloud_init=False
    )
    assert reason is not None and "interface user) is not hot-pluggable" in reason
    assert (
        warmstore.cold_reason(
            plan, hot_pluggable=True, plugin_adjusted=False, wait_cloud_init=False
        )
        is None
    )


def test_warm_choice_says_why_a_template_is_made_first(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.domain_name == f"wqvttpl-{spec.key[:8]}"
    choose = lambda others: warmstore.warm_choice(  # noqa: E731
        _plan(), spec, plugin_adjusted=False, wait_cloud_init=False, others=others
    )
    assert "no template of d12 yet" in choose([]).reason
    _record(tmp_path, spec.key, image_fingerprint=spec.image_fingerprint)
    made = warmstore.list_templates(tmp_path)
    assert choose(made).reason == f"template {spec.key}" and choose(made).warm
    bigger = attrs.evolve(spec, key="f" * 16, shape=attrs.evolve(SHAPE, memory_mib=1024))
    shaped = warmstore.warm_choice(
        _plan(memory_mib=1024), bigger, plugin_adjusted=False, wait_cloud_init=False, others=made
    )
    assert "no template of this shape (1024 MiB" in shaped.reason and shaped.warm
    assert (
        "image changed"
        in choose([attrs.evolve(made[0], key="e" * 16, image_fingerprint="stat:1")]).reason
    )
    cold = warmstore.warm_choice(
        _plan(), spec, plugin_adjusted=True, wait_cloud_init=False, others=made
    )
    assert not cold.warm and cold.to_dict()["boot"] == "cold"


class _Adjusts:
    @staticmethod
    @hookimpl
    def vnode_domain_xml(node: NodePlan, domain: ET.Element) -> None:
        ET.SubElement(domain.find("devices"), "watchdog", model="i6300esb")


def _planned(state: Path, *extra: PluginSource) -> NodePlan:
    host = PluginHost([*entry_point_sources(), *extra])
    session = Session.for_config(build_config({"paths": {"state": str(state)}}), host)
    backend = session.plugins.network_backend("bridge:br0", session.plugin_context(connect=False))
    ref = parse_spec("3:d12", session.config.pools)
    return planning.plan_node(session, ref, session.config.defaults, backend, "qemu")


def test_a_plugins_domain_change_is_seen(tmp_path: Path) -> None:
    assert not plugin_adjusted(PluginHost(entry_point_sources()), _planned(tmp_path))
    adjusts = PluginSource("adjusts", lambda: _Adjusts)
    host = PluginHost([*entry_point_sources(), adjusts])
    assert plugin_adjusted(host, _planned(tmp_path, adjusts))


# -- a clone's identity ---------------------------------------------------------------------


def test_static_network_files_agree() -> None:
    files = network_files(_plan())
    assert files["mode"] == "static" and files["address"] == "10.0.0.3/24"
    assert files["gateway"] == "10.0.0.1"
    netplan = yaml.safe_load(files["netplan.yaml"])["network"]["ethernets"]["vnode0"]
    assert netplan["match"]["macaddress"] == "52:54:00:00:00:03"
    assert netplan["addresses"] == ["10.0.0.3/24"]
    assert "address1=10.0.0.3/24,10.0.0.1" in files["nm.nmconnection"]
    assert "Address=10.0.0.3/24" in files["networkd.network"]
    assert "address 10.0.0.3/24" in files["ifupdown"]
    assert files["resolv.conf"] == "nameserver 10.0.0.1\nsearch lab\n"
    # The stack a guest uses is the plugin's knowledge: its script picks it, not vnode's.
    assert files["persist"].startswith("#!/bin/sh\n") and "netplan apply" in files["persist"]
    apply = warm.apply_script()
    for stack_word in ("netplan", "nmcli", "networkctl", "ifup", "resolvconf"):
        assert stack_word not in apply, stack_word


def test_dhcp_network_files_and_no_gateway() -> None:
    files = network_files(_plan(address=None))
    assert files["mode"] == "dhcp" and files["gateway"] == ""
    assert "DHCP=ipv4" in files["networkd.network"] and "inet dhcp" in files["ifupdown"]
    no_gateway = network_files(_plan(address=StaticAddress(ip="10.0.0.3", prefix=24)))
    # The apply script reads every file: an absent gateway is an empty one.
    assert no_gateway["gateway"] == "" and "Gateway" not in no_gateway["networkd.network"]


def test_identity_values_are_fresh_per_clone() -> None:
    host_key = generate_keypair("h")
    plan = _plan()
    plan = attrs.evolve(plan, guest_network_files=network_files(plan))
    one = warm.identity_values(plan, authorized_key="ssh-ed25519 AAAA u", host_key=host_key)
    two = warm.identity_values(plan, authorized_key="ssh-ed25519 AAAA u", host_key=host_key)
    assert one["fqdn"] == "vnode03.lab" and one["hostname"] == "vnode03"
    assert one["authorized_keys"] == "ssh-ed25519 AAAA u\n"
    for field in ("machine-id", "boot-id", "random-seed"):
        assert one[field] != two[field]
    assert one["net/mode"] == "static" and one["mac"] == "52:54:00:00:00:03"


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[defaults]\nuri = "test:///default"\n[paths]\nstate = "{tmp_path / "state"}"\n'
        f'image_store = "{images}"\n[images]\nauto_refresh = false\n'
    )
    monkeypatch.setenv("VNODE_CONFIG", str(path))
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["template", "make", "nosuchdistro"], "nosuchdistro"),
        (["template", "make", "d12", "--memory", "0"], "memory"),
        (["template", "make", "d12", "--virt-type", "bogus"], "virt_type"),
        (["template", "remove", "d12"], "no template 'd12'"),
        (["template", "frob"], 'Unknown command "frob"'),
        (["up", "3", "--warm", "--cold"], "--warm or --cold"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_made(
    config: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err
    assert not (config / "state" / "templates").exists()


def test_missing_image_is_a_host_problem(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "make", "d12", "--virt-type", "qemu"]) == 1
    assert "d12" in capsys.readouterr().err
    assert not (config / "state" / "templates").exists()


def test_list_is_empty_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_each_template_is_made_once_and_a_failure_boots_its_nodes_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _spec(tmp_path)
    bad = attrs.evolve(good, key="b" * 16, directory=tmp_path / "templates" / ("b" * 16))
    made: list[str] = []

    def make(storage: object, spec: warmstore.TemplateSpec) -> warmstore.TemplateRecord:
        made.append(spec.key)
        if spec.key == bad.key:
            raise warmstore.EnvironmentProblem("the guest never said it was ready")
        directory = _record(tmp_path, spec.key)
        return warmstore.read_template(directory)  # type: ignore[return-value]

    monkeypatch.setattr(warmstore, "make_template", make)
    choices = (
        warmstore.WarmChoice("n1", good, "x"),
        warmstore.WarmChoice("n2", good, "x"),
        warmstore.WarmChoice("n3", bad, "x"),
        warmstore.WarmChoice("n4", None, "cold anyway"),
    )
    phases: list[tuple[str, str]] = []
    warm_nodes, cold = warmstore.ensure_templates(
        choices,
        {"local": _storage(tmp_path)},
        tmp_path / "locks",
        lambda node, text: phases.append((node, text)),
    )
    assert made == [good.key, bad.key]
    assert set(warm_nodes) == {"n1", "n2"} and warm_nodes["n1"].template.key == good.key
    assert set(cold) == {"n3"} and "never said it was ready" in cold["n3"]
    assert ("n1", f"making template {good.key} (d12)") in phases


# -- damaged, older and unfinished templates ---------------------------------------------------


@pytest.mark.parametrize(
    "record", ['{"key": "aaaa111122223333", "distro": "d1', "", "[1]", '{"distro": "d12"}']
)
def test_an_unreadable_record_is_listed_damaged_never_cloned_nor_replaced(
    tmp_path: Path, record: str
) -> None:
    spec = _spec(tmp_path)
    directory = _record(tmp_path, spec.key)
    (directory / "record.json").write_text(record)  # truncated by a crash, or foreign
    assert warmstore.list_templates(tmp_path) == []  # never cloned from
    [listed] = warmstore.list_templates(tmp_path, damaged=True)
    assert listed.key == spec.key and listed.damage and "damaged" in listed.made
    with pytest.raises(warmstore.EnvironmentProblem, match=r"damaged.*not replaced"):
        warmstore.make_template(_storage(tmp_path), spec)  # nothing is attempted
    assert (directory / "disk.qcow2").exists() and (directory / "state.save").exists()
    # It is removed by name, like any other, once no node runs on it.
    [chosen] = warmstore.select_templates(tmp_path, spec.key[:6])
    warmstore.remove_template(chosen, tmp_path / "nodes")
    assert not directory.exists()


def test_a_damaged_template_with_users_is_not_removed(tmp_path: Path) -> None:
    directory = _record(tmp_path, "aaaa111122223333")
    (directory / "record.json").write_text("{")
    _overlay(tmp_path / "nodes" / "vnode01" / "disk.qcow2", str(directory / "disk.qcow2"))
    [chosen] = warmstore.select_templates(tmp_path, "aaaa11")
    with pytest.raises(UsageError, match="base of vnode01"):
        warmstore.remove_template(chosen, tmp_path / "nodes")
    assert directory.is_dir()


def test_an_older_record_without_newer_fields_is_read(tmp_path: Path) -> None:
    directory = _record(tmp_path, "aaaa111122223333")
    data = json.loads((directory / "record.json").read_text())
    for newer in ("qemu", "libvirt", "image_fingerprint", "save_bytes"):
        del data[newer]
    data["retired_field"] = "from an older vnode"
    (directory / "record.json").write_text(json.dumps(data))
    [record] = warmstore.list_templates(tmp_path)
    assert (record.key, record.distro, record.damage) == ("aaaa111122223333", "d12", None)


def test_an_unfinished_template_with_users_is_not_replaced(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec.directory.mkdir(parents=True)  # no record: an attempt killed before its end
    (spec.directory / "disk.qcow2").write_bytes(b"QFI\xfb")
    _overlay(tmp_path / "nodes" / "vnode01" / "disk.qcow2", str(spec.disk))
    with pytest.raises(warmstore.EnvironmentProblem, match=r"base of vnode01; not replaced"):
        warmstore.make_template(_storage(tmp_path), spec)
    assert spec.disk.exists()
