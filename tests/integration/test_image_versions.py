"""Images under nodes: replacing a distro's image (`images import --force`) never breaks the
nodes made from the old one. The old version stays while a node is backed by it (the node
restarts and answers over SSH), a new node gets the new version, and the old version goes
when its last node does."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IMAGE_STORE, TEST_DISTRO, Lab, cleanup_lab, make_lab
from vnode import imagestore
from vnode.labplan import write_lock

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def versioned(host_ready: None) -> Iterator[tuple[Lab, Path]]:
    """A lab with an image store of its own (the shared one is never replaced): its d12 is
    the test image, reached through a symlink the way an older store could hold it."""
    store = Path(f"/var/lib/vnode-test-versions-{os.getpid()}")
    store.mkdir(mode=0o755)
    (store / "d12.qcow2").symlink_to((IMAGE_STORE / f"{TEST_DISTRO}.qcow2").resolve())
    lab = make_lab("vv", image_store=store)
    try:
        yield lab, store
    finally:
        cleanup_lab(lab)
        subprocess.run(["rm", "-rf", str(store)], check=False)


def _versions(lab: Lab) -> dict[str, dict]:
    code, listed = lab.run_json("images", "list", "--versions")
    assert code == 0, listed
    return {v["sha256"]: v for v in listed}


def test_a_replaced_image_leaves_its_nodes_working(versioned: tuple[Lab, Path]) -> None:
    lab, store = versioned
    code, results = lab.run_json("up", "1", "--timeout", "600", timeout=900)
    assert code == 0 and results[0]["state"] == "ready", results
    first = lab.name(1)
    disk = lab.state / "nodes" / first / "disk.qcow2"
    old = imagestore.current(store, "d12.qcow2")
    assert old is not None, "up moved the name into the versioned store"
    assert imagestore.backing_file(disk) == str(imagestore.version_path(store, old))
    assert _versions(lab)[old]["users"] == ["name d12", f"node {first}"]

    # A new version of d12: the same system, other bytes (another cluster size).
    other = store.parent / f"{store.name}-new.qcow2"
    try:
        argv = ["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=128k"]
        subprocess.run([*argv, str(store / "d12.qcow2"), str(other)], check=True, timeout=600)
        imported = lab.run("images", "import", str(other), "--as", "d12", "--force")
        assert imported.returncode == 0, imported.stderr
    finally:
        other.unlink(missing_ok=True)
    new = imagestore.current(store, "d12.qcow2")
    assert new not in (None, old)
    versions = _versions(lab)
    assert versions[old]["users"] == [f"node {first}"] and not versions[old]["current"]
    assert versions[new]["current"] and versions[new]["status"] == "imported"
    listed = lab.run("images", "list")
    assert old[:12] in listed.stdout and f"node {first}" in listed.stdout, listed.stdout

    # The node restarts (QEMU opens its disk chain afresh) on the version it was made from.
    rebooted = lab.run("reboot", "1", "--timeout", "60", timeout=300)
    assert rebooted.returncode == 0, rebooted.stderr
    waited = lab.run("wait", "1", "--timeout", "600", timeout=900)
    assert waited.returncode == 0, waited.stderr
    ssh = lab.ssh("1", "cat /etc/hostname")
    assert ssh.returncode == 0 and ssh.stdout.strip() == first, ssh.stderr
    assert imagestore.backing_file(disk) == str(imagestore.version_path(store, old))

    # A new node is made from the new version, and says so in its metadata.
    code, made = lab.run_json("up", "2", "--no-wait")
    assert code == 0 and made[0]["state"] == "started", made
    second = lab.state / "nodes" / lab.name(2) / "disk.qcow2"
    assert imagestore.backing_file(second) == str(imagestore.version_path(store, new))
    shapes = {n["name"]: n["shape"]["image_sha256"] for n in lab.run_json("list")[1]}
    assert shapes == {first: old, lab.name(2): new}, (old, new)

    # A lab whose lab.lock pins the old version makes its nodes from it, though the name
    # has moved on; `plan --update` would replace them with the current one. (That the old
    # version boots is shown above: no wait for this node.)
    labdir = lab.state / "lab"
    labdir.mkdir()
    labfile = labdir / "lab.toml"
    labfile.write_text('[lab]\nname = "pinned"\n[[nodes]]\nspec = "3"\n')
    write_lock(labdir / "lab.lock", "pinned", {"d12": old})
    applied = lab.run("apply", str(labfile), "--yes", "--no-wait", "--json")
    assert applied.returncode == 0, applied.stderr
    assert [n["state"] for n in json.loads(applied.stdout)] == ["started"], applied.stdout
    third = lab.state / "nodes" / lab.name(3) / "disk.qcow2"
    assert imagestore.backing_file(third) == str(imagestore.version_path(store, old))
    assert json.loads((labdir / "lab.lock").read_text())["images"] == {"d12": old}
    planned = lab.run("plan", str(labfile), "--update", "--json")
    assert planned.returncode == 0, planned.stderr
    (node,) = json.loads(planned.stdout)["nodes"]
    assert node["action"] == "replace", node
    assert f"image {old[:12]} -> {new[:12]}" in node["reasons"], node

    # The old version stays while the lock pins it, and goes with its last user.
    destroyed = lab.run("destroy", "1", "3")
    assert destroyed.returncode == 0, destroyed.stderr
    assert imagestore.version_path(store, old).exists()
    (labdir / "lab.lock").unlink()
    pruned = lab.run("images", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert not imagestore.version_path(store, old).exists()
    assert set(_versions(lab)) == {new}
    destroyed = lab.run("destroy", "2")
    assert destroyed.returncode == 0, destroyed.stderr
    assert imagestore.versions(store) == [new]
    pruned = lab.run("images", "prune")
    assert pruned.returncode == 0 and "nothing to remove" in pruned.stdout, pruned.stderr
    record = imagestore.record_file(imagestore.version_path(store, new), "d12")
    assert json.loads(record.read_text())["status"] == "imported"
