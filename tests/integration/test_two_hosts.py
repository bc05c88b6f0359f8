"""Two hypervisor hosts in one lab: the local libvirtd and a second one in a namespace
(tests/harness/hypervisor_host.py), reached over qemu+ssh. Nodes on both in one `vnode up`;
the remote node is reached through its hypervisor (SSH jump) with strict host keys."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import attrs
import pytest

from tests.conftest import (
    IMAGE_STORE,
    LAB_PREFIX,
    TEST_DISTRO,
    VNODE,
    Lab,
    cleanup_lab,
    free_octet,
    make_lab,
)
from tests.harness.hypervisor_host import HypervisorHost
from tests.harness.pools import remove_pool
from tests.integration.clones import DISTINCT, check_own_identity, probe
from vnode import hypervisor, images, imagestore


@pytest.fixture(scope="module")
def two_hosts(host_ready: None) -> Iterator[Grown]:
    # The link to the second host is on 10.232.N here; its own network 10.233.N is inside
    # its namespace, but other labs' routes must not shadow it for this host either.
    octet = free_octet("10.232", "10.233")
    with HypervisorHost(LAB_PREFIX or "mh", octet) as second:
        yield from _with_lab(second, octet)


@attrs.frozen
class Grown:
    """A lab that starts with no [[hosts]] and grows: :meth:`hosts` rewrites its config."""

    lab: Lab
    second: HypervisorHost
    pool: str
    octet: int
    base: str

    def hosts(self, *names: str) -> None:
        blocks = {
            "hv1": f"""
[[hosts]]
name = "hv1"
uri = "qemu:///system"
pool = "{self.pool}"
pool_dir = "{self.lab.state}/pool"
""",
            "hv2": f"""
[[hosts]]
name = "hv2"
uri = "{self.second.uri}"
subnet = "10.233.{self.octet}.0/24"
known_hosts = "{self.second.known_hosts}"
identity = "{self.second.key}"
""",
        }
        self.lab.config_path.write_text(self.base + "".join(blocks[name] for name in names))


def _with_lab(second: HypervisorHost, octet: int) -> Iterator[Grown]:
    lab = make_lab("th")
    pool = f"{LAB_PREFIX}thpool-{uuid.uuid4().hex[:6]}"
    try:
        yield Grown(lab, second, pool, octet, lab.config_path.read_text())
    finally:
        try:
            cleanup_lab(lab)
        finally:
            conn = hypervisor.connect("qemu:///system")
            remove_pool(conn, pool)
            conn.close()


def _virsh(uri: str, *args: str) -> str:
    return subprocess.run(
        ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, check=False
    ).stdout


# The second host's nodes are warm clones of one template of this shape.
WARM_SHAPE = ("--memory", "512", "--vcpus", "1", "--virt-type", "qemu")


def test_growing_from_one_host_to_two(two_hosts: Grown) -> None:
    """A new user's way: one host (no [[hosts]]), then that same host named in [[hosts]],
    then a second host added. What was made at each step keeps working at the next (reached
    over SSH). One guest boots on the lone host; the second host's node is a warm clone, so
    the template test below finds its template made (one boot on the second host for both)."""
    grown = two_hosts
    lab, second, pool = grown.lab, grown.second, grown.pool
    first, local, remote = lab.name(1), lab.name(3), lab.name(2)

    code, results = lab.run_json("up", "1", "--timeout", "600", timeout=900)
    assert code == 0 and results[0]["state"] == "ready", results
    marker = lab.state / "networks" / f"{lab.network}.uuid"
    assert marker.is_file()

    # The same host, now named: its network is still vnode's, its node still answers.
    grown.hosts("hv1")
    listed = lab.run("list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [[first, "hv1"]]
    ssh = lab.ssh("1", "hostname")
    assert ssh.returncode == 0 and ssh.stdout.strip() == first, ssh.stderr
    code, made = lab.run_json("up", "3", "--no-wait")
    assert code == 0 and made[0]["state"] == "started", made
    assert made[0]["ip"] == lab.ip_of(3)
    assert not (lab.state / "hosts").exists()
    # The local host takes the listed hosts' path: the node's disk, seed and console are
    # volumes in its pool, beside the image and the sha256 record of what was uploaded.
    local_volumes = {v.split()[0] for v in _virsh("qemu:///system", "vol-list", pool).splitlines()}
    image_sha = images.read_record(IMAGE_STORE / f"{TEST_DISTRO}.qcow2").sha256
    # The image's version is a volume named by its digest (a newer one would be another).
    version = imagestore.volume_name(image_sha)
    assert {f"{local}-disk.qcow2", f"{local}-seed.iso", version} <= local_volumes
    _private_volumes("qemu:///system", local, pool)
    record = (lab.state / "pool" / f"{version}.sha256").read_text()
    assert record.split()[0] == image_sha
    destroyed = lab.run("destroy", "3")
    assert destroyed.returncode == 0, destroyed.stderr

    # A second host: nodes on both, the first node untouched by it.
    grown.hosts("hv1", "hv2")
    started = time.monotonic()
    code, results = lab.run_json(
        "up", "2@hv2", "--warm", *WARM_SHAPE, "--timeout", "900", timeout=1800
    )
    print(f"up on the second host: {time.monotonic() - started:.1f}s")
    assert code == 0 and results[0]["state"] == "ready", results
    assert results[0]["boot"] == "warm", results
    assert results[0]["ip"].startswith("10.233.")
    # The main libvirtd sees nothing of the remote node; the second host holds it.
    assert remote not in _virsh("qemu:///system", "list", "--all", "--name").split()
    assert remote in _virsh(second.uri, "list", "--all", "--name").split()
    volumes = _virsh(second.uri, "vol-list", "vnode")
    assert version in volumes and f"{remote}-disk.qcow2" in volumes
    _private_volumes(second.uri, remote, "vnode", seed=False)

    listed = lab.run("list")
    assert listed.returncode == 0, listed.stderr
    hosts = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert hosts == {first: "hv1", remote: "hv2"}

    for number, name in ((1, first), (2, remote)):
        ssh = lab.ssh(str(number), "hostname")
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.strip() == name
        log = lab.run("log", str(number))
        assert log.returncode == 0 and log.stdout.strip(), log.stderr

    # Plain OpenSSH with vnode's ssh-config reaches the remote node through its hypervisor.
    config = lab.state / "ssh_config"
    written = lab.run("ssh-config")
    assert written.returncode == 0, written.stderr
    config.write_text(written.stdout)
    for name in (first, remote):
        plain = subprocess.run(
            ["ssh", "-F", str(config), name, "hostname"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert plain.returncode == 0 and plain.stdout.strip() == name, plain.stderr

    # The lab-day commands find each node's host: wait (and --run) through the jump, stop.
    code, waited = lab.run_json("wait", "1-2", "--run", "cat /etc/hostname", "--timeout", "120")
    assert code == 0, waited
    assert {r["name"]: r["output"].strip() for r in waited} == {first: first, remote: remote}
    stopped = lab.run("stop", "2", "--timeout", "5")
    assert stopped.returncode == 0, stopped.stderr
    assert _virsh(second.uri, "domstate", remote).strip() == "shut off"

    # Names are unique across the lab: node 2 named on hv1 moves there (removed on hv2).
    code, moved = lab.run_json("up", "2@hv1", "--no-wait")
    assert code == 0 and moved[0]["state"] == "started", moved
    assert remote not in _virsh(second.uri, "list", "--all", "--name").split()
    assert remote in _virsh("qemu:///system", "list", "--all", "--name").split()
    remote_left = {v.split()[0] for v in _virsh(second.uri, "vol-list", "vnode").splitlines() if v}
    assert not {v for v in remote_left if v.startswith(remote)}

    destroyed = lab.run("destroy", "--all")
    assert destroyed.returncode == 0, destroyed.stderr
    assert _virsh(second.uri, "list", "--all", "--name").split() == []
    for name in (first, remote):
        assert name not in _virsh("qemu:///system", "list", "--all", "--name").split()
    assert not (lab.state / "nodes" / first).exists()
    left = {v.split()[0] for v in _virsh(second.uri, "vol-list", "vnode").splitlines() if v}
    # The current version's volume stays for the next node, the template for the next
    # clone (removed by the test below); nothing else of vnode's.
    assert {v for v in left if not v.startswith("template.")} == {version, f"{version}.sha256"}


def _private_volumes(
    uri: str, name: str, pool: str, extra: str | None = None, *, seed: bool = True
) -> None:
    """A node's disks and seed (a clone's identity) hold its secrets: 0600 volumes, on
    either host (its image is 0644)."""
    secret = f"{name}-seed.iso" if seed else f"{name}-identity.tar"
    for volume in filter(None, (f"{name}-disk.qcow2", secret, extra)):
        xml = _virsh(uri, "vol-dumpxml", "--pool", pool, volume)
        assert "<mode>0600</mode>" in xml, (uri, volume, xml)


def test_warm_clones_on_the_second_host(two_hosts: Grown) -> None:
    """`up --warm` on a remote host: the template is made there (by the test above, or here
    when this test runs alone; its volumes in that host's pool, nothing of it on this
    machine), the clones are restored there, and each is a machine of its own, checked over
    SSH through the host; the template is listed and removed per host."""
    grown = two_hosts
    grown.hosts("hv1", "hv2")
    lab, second = grown.lab, grown.second
    clones = (5, 6)
    code, nodes = lab.run_json(
        "up", *(f"{n}@hv2" for n in clones), "--warm", *WARM_SHAPE, "--timeout", "900",
        timeout=1800,
    )  # fmt: skip
    assert code == 0, nodes
    by_name = {node["name"]: node for node in nodes}
    for number in clones:
        node = by_name[lab.name(number)]
        assert node["state"] == "ready" and node["boot"] == "warm", node
        assert node["ip"] == f"10.233.{grown.octet}.{100 + number}"
    remote_domains = _virsh(second.uri, "list", "--all", "--name").split()
    assert {lab.name(n) for n in clones} <= set(remote_domains)
    assert not any("tpl-" in name for name in remote_domains)  # the template's was transient

    listed = lab.run("template", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [template] = json.loads(listed.stdout)
    assert (template["host"], template["distro"], template["memory_mib"]) == ("hv2", "d12", 512)
    key = template["key"]
    table = lab.run("template", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["KEY", "HOST", "DISTRO"] and table[1].split()[1] == "hv2"
    volumes = set(_virsh(second.uri, "vol-list", "vnode").split())
    made = {f"template.{key}-disk.qcow2", f"template.{key}-state.save", f"template.{key}.json"}
    assert made <= volumes, volumes
    # What only making it needed is gone: the template's seed, the clones' restore images.
    assert f"template.{key}-seed.iso" not in volumes
    assert not any(v.endswith("-restore.save") for v in volumes), volumes
    for number in clones:  # the clone's identity and overlay hold its secrets: 0600
        _private_volumes(second.uri, lab.name(number), "vnode", extra=None, seed=False)
        assert f"{lab.name(number)}-identity.tar" in volumes
    # Nothing of it on this machine: no template in the state directory, none on hv1.
    assert (
        not any((lab.state / "templates").glob("*")) if (lab.state / "templates").exists() else True
    )
    assert not any(
        "template." in v for v in _virsh("qemu:///system", "vol-list", grown.pool).split()
    )

    seen = {number: probe(lab, number) for number in clones}
    for number in clones:
        check_own_identity(lab, number, seen[number], f"10.233.{grown.octet}.{100 + number}/24")
    for field in DISTINCT:
        assert seen[5][field] != seen[6][field], field

    # Removed per host: hv1 has none; on hv2 it is refused while the clones run on it.
    none_there = lab.run("template", "remove", "d12", "--host", "hv1")
    assert none_there.returncode == 2 and "on hv1" in none_there.stderr, none_there.stderr
    in_use = lab.run("template", "remove", "d12")
    assert in_use.returncode == 2 and lab.name(5) in in_use.stderr, in_use.stderr
    assert made <= set(_virsh(second.uri, "vol-list", "vnode").split())
    destroyed = lab.run("destroy", *(str(n) for n in clones))
    assert destroyed.returncode == 0, destroyed.stderr
    removed = lab.run("template", "remove", "d12", "--host", "hv2")
    assert removed.returncode == 0 and key in removed.stdout and "hv2" in removed.stdout
    left = set(_virsh(second.uri, "vol-list", "vnode").split())
    assert not any(v.startswith("template.") or v.startswith(lab.stem) for v in left), left
    assert json.loads(lab.run("template", "list", "--json").stdout) == []


def test_second_host_lost_during_up(two_hosts: Grown) -> None:
    """Last in the module: the second host stays down afterwards. The nodes have an extra
    disk each: the remote node's is a volume of the remote host's pool, private like its
    disk, and the local node's is its vdb by serial."""
    import re

    two_hosts.hosts("hv1", "hv2")
    lab, second = two_hosts.lab, two_hosts.second
    local, remote = lab.name(3), lab.name(4)
    began = time.monotonic()
    proc = subprocess.Popen(
        [*VNODE, "up", "3@hv1", "4@hv2", "--disk-extra", "1", "--timeout", "600", "--json"],
        env=lab.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while remote not in _virsh(second.uri, "list", "--name").split():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - began < 300, "the remote node never started"
            time.sleep(1)
        assert f"{remote}-data1.qcow2" in _virsh(second.uri, "vol-list", "vnode")
        _private_volumes(second.uri, remote, "vnode", extra=f"{remote}-data1.qcow2")
        second.stop_libvirtd()
        stopped = time.monotonic() - began
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    results = {r["name"]: r for r in json.loads(out)}
    assert results[local]["state"] == "ready", results[local]
    extra = lab.ssh("3", "readlink /dev/disk/by-id/virtio-vnode-data1")
    assert extra.stdout.strip() == "../../vdb", extra.stderr
    assert results[remote]["state"] == "failed", results[remote]
    assert "could not be removed" in results[remote]["detail"]  # the lost host is named
    failed_at = [float(m.group(1)) for m in re.finditer(rf"\[\s*([\d.]+)s\] {remote}: failed", err)]
    assert failed_at and failed_at[0] - stopped < 30, (stopped, err[-2000:])
    listed = lab.run("list")
    assert "host hv2 did not answer" in listed.stderr
    assert local in listed.stdout
