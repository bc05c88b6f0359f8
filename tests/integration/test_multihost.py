"""Several hypervisor hosts ([[hosts]]), against the local libvirtd.

- the storage path (libvirt's storage API): image upload verified and recorded, overlay with
  a backing store, seed volume, download, removal: no VM needed;
- a configured host that does not answer: a node pinned to it fails at once with one line
  and nothing is made, ``list`` reports the host, ``destroy`` says what it could not check,
  ``--all-or-nothing`` makes no node at all, ``doctor`` has a verdict per host.

Nodes booted on two hosts (the local one through the same storage path as the remote one)
are in test_two_hosts.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX, Lab, cleanup_lab, make_lab
from tests.harness.pools import remove_pool
from vnode import hypervisor

# A libvirt URI that cannot answer: a host that is down.
DEAD_URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def _pool_name() -> str:
    return f"{LAB_PREFIX}mhpool-{uuid.uuid4().hex[:6]}"


def test_storage_api_upload_overlay_seed_download(host_ready: None, tmp_path: Path) -> None:
    conn = hypervisor.connect("qemu:///system")
    name = _pool_name()
    target = tmp_path / "pool"
    image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    try:
        pool = hypervisor.ensure_pool(conn, name, str(target))
        base, uploaded = hypervisor.ensure_image(conn, pool, "base.qcow2", image, sha)
        assert uploaded
        assert hypervisor.download_sha256(conn, base) == sha
        record = hypervisor.find_volume(pool, "base.qcow2.sha256")
        assert record is not None
        assert hypervisor.download(conn, record).decode().split()[0] == sha
        # Unchanged locally: not uploaded again.
        assert hypervisor.ensure_image(conn, pool, "base.qcow2", image, sha)[1] is False
        overlay = hypervisor.create_overlay_volume(pool, "n-disk.qcow2", base, 2 << 30)
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", "-U", overlay.path()],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert info["backing-filename"] == base.path()
        assert info["virtual-size"] == 2 << 30
        seed = hypervisor.upload_bytes(conn, pool, "n-seed.iso", b"x" * 100_000, mode="0600")
        assert hypervisor.download(conn, seed) == b"x" * 100_000
        assert hypervisor.volume_tail(conn, pool, "n-seed.iso", 10) == b"x" * 10
        assert (target / "n-seed.iso").stat().st_mode & 0o777 == 0o600
    finally:
        remove_pool(conn, name)
        conn.close()
    assert not target.exists()


@pytest.fixture(scope="module")
def hosts_lab(host_ready: None) -> Iterator[tuple[Lab, str]]:
    """A lab whose config has [[hosts]]: the local libvirtd (its own pool) and a dead host."""
    lab = make_lab("mh")
    pool = _pool_name()
    with lab.config_path.open("a") as handle:
        handle.write(
            f"""
[[hosts]]
name = "hv1"
uri = "qemu:///system"
pool = "{pool}"
pool_dir = "{lab.state}/pool"

[[hosts]]
name = "down"
uri = "{DEAD_URI}"
"""
        )
    try:
        yield lab, pool
    finally:
        cleanup_lab(lab)
        conn = hypervisor.connect("qemu:///system")
        remove_pool(conn, pool)
        conn.close()


def _volumes(pool: str) -> set[str]:
    out = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "vol-list", pool],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_a_host_down_fails_only_its_nodes(hosts_lab: tuple[Lab, str]) -> None:
    lab, pool = hosts_lab
    code, results = lab.run_json("up", "2@down", "--no-wait", timeout=120)
    (remote,) = results
    assert remote["state"] == "failed" and "host down" in remote["detail"], remote
    assert code == 1
    assert not {v for v in _volumes(pool) if v.startswith(lab.name(2))}

    listed = lab.run("list")
    assert listed.returncode == 1  # a host did not answer
    assert "host down did not answer" in listed.stderr

    destroyed = lab.run("destroy", "2")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "not checked: down" in destroyed.stdout


def test_all_or_nothing_makes_nothing_when_a_host_is_down(hosts_lab: tuple[Lab, str]) -> None:
    lab, pool = hosts_lab
    made = lab.run("up", "3@hv1", "4@down", "--no-wait", "--all-or-nothing")
    assert made.returncode == 1
    (line,) = made.stderr.strip().splitlines()
    assert "nothing made (--all-or-nothing): host down" in line
    assert lab.name(3) not in _virsh_list()
    assert not {v for v in _volumes(pool) if v.startswith(lab.name(3))}


def test_doctor_gives_a_verdict_per_host(hosts_lab: tuple[Lab, str]) -> None:
    lab, pool = hosts_lab
    code, verdicts = lab.run_json("doctor")
    by_check = {v["check"]: v for v in verdicts}
    assert by_check["host hv1"]["status"] == "ok", by_check["host hv1"]
    assert f"pool {pool}" in by_check["host hv1"]["message"]
    assert by_check["host down"]["status"] == "fail"
    assert DEAD_URI in by_check["host down"]["message"]
    assert code == 1


def _virsh_list() -> list[str]:
    out = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return out.split()


def test_placement_pins_and_budgets(hosts_lab: tuple[Lab, str]) -> None:
    lab, _ = hosts_lab
    unknown = lab.run("up", "3@hv9", "--no-wait")
    assert unknown.returncode == 2
    assert "no host 'hv9'" in unknown.stderr
