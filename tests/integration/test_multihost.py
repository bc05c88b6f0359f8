"""Several hypervisor hosts ([[hosts]]), against the local libvirtd.

- the storage path (libvirt's storage API): image upload verified and recorded, overlay with
  a backing store, seed volume, download, removal: no VM needed;
- one node booted through [[hosts]] (the local host takes the same storage path as a remote
  one): ``list`` with HOST, ``ssh``, ``log`` read back as a volume, ``destroy`` leaves no
  node volume;
- a second configured host that does not answer: ``list`` reports it and still lists the
  local node, a node pinned to it fails at once with one line, ``destroy`` says what it
  could not check.

The two-host test with a second libvirtd in a namespace is not here yet (see the report).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IMAGE_STORE, LAB_PREFIX, TEST_DISTRO, Lab, cleanup_lab, make_lab
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
        hypervisor.remove_pool(conn, name)
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
        hypervisor.remove_pool(conn, pool)
        conn.close()


def _volumes(pool: str) -> set[str]:
    out = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "vol-list", pool],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_nodes_over_hosts_with_one_host_down(hosts_lab: tuple[Lab, str]) -> None:
    lab, pool = hosts_lab
    started = time.monotonic()
    code, results = lab.run_json("up", "1@hv1", "2@down", timeout=900)
    by_name = {r["name"]: r for r in results}
    local, remote = by_name[lab.name(1)], by_name[lab.name(2)]
    assert local["state"] == "ready", local
    assert remote["state"] == "failed"
    assert "host down" in remote["detail"]
    assert code == 1
    print(f"up with one host down: {time.monotonic() - started:.1f}s")

    # The node's disk, seed and console are volumes in the host's pool, the image beside.
    volumes = _volumes(pool)
    name = lab.name(1)
    assert {f"{name}-disk.qcow2", f"{name}-seed.iso", f"{TEST_DISTRO}.qcow2"} <= volumes
    assert f"{TEST_DISTRO}.qcow2.sha256" in volumes
    image_sha = json.loads((IMAGE_STORE / f"{TEST_DISTRO}.qcow2.json").read_text())["sha256"]
    record = subprocess.run(
        ["cat", str(lab.state / "pool" / f"{TEST_DISTRO}.qcow2.sha256")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert record.split()[0] == image_sha

    listed = lab.run("list")
    assert listed.returncode == 1  # a host did not answer
    assert "HOST" in listed.stdout.splitlines()[0]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert row.split()[1] == "hv1"
    assert "host down did not answer" in listed.stderr

    ssh = lab.ssh("1", "hostname")
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == name

    log = lab.run("log", "1")
    assert log.returncode == 0, log.stderr
    assert "login:" in log.stdout or "cloud-init" in log.stdout

    destroyed = lab.run("destroy", "1", "2")
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"{name}: destroyed" in destroyed.stdout
    assert "not checked: down" in destroyed.stdout
    left = {v for v in _volumes(pool) if v.startswith(name)}
    assert left == set()


def test_placement_pins_and_budgets(hosts_lab: tuple[Lab, str]) -> None:
    lab, _ = hosts_lab
    unknown = lab.run("up", "3@hv9", "--no-wait")
    assert unknown.returncode == 2
    assert "no host 'hv9'" in unknown.stderr
