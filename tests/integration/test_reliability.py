"""The reliability matrix: bad input, faults and concurrent use, each tried for real.

README's troubleshooting section lists the same cases with what vnode does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    IMAGE_STORE,
    TEST_DISTRO,
    VNODE,
    Lab,
    cleanup_lab,
    domain_names,
    domain_xml,
    make_lab,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An image store with the real test image and a blank disk that never boots ("d11")."""
    path = Path(f"/var/lib/vnode-test-store-{os.getpid()}")
    path.mkdir(mode=0o755)
    try:
        (path / "d12.qcow2").symlink_to(IMAGE_STORE / f"{TEST_DISTRO}.qcow2")
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path / "d11.qcow2"), "1G"], check=True
        )
        (path / "d11.qcow2").chmod(0o644)
        private = path / "u24.04.qcow2"
        # Another size than d11's: the store keeps images by content, and two blank disks of
        # one size are one version (with one mode).
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(private), "2G"], check=True)
        private.chmod(0o600)
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture(scope="module")
def rlab(host_ready: None, store: Path) -> Iterator[Lab]:
    lab = make_lab("vr", image_store=store)
    try:
        yield lab
    finally:
        cleanup_lab(lab)


def _snapshot(lab: Lab) -> tuple[set[str], set[str], str]:
    nodes = lab.state / "nodes"
    files = {str(p) for p in nodes.rglob("*")} if nodes.exists() else set()
    network = lab.network_xml(missing_ok=True)
    return domain_names(lab.stem), files, network


BAD_INPUT = [
    ["x"],
    ["3:"],
    [":f43"],
    ["31"],
    ["vr003"],
    ["3", "vr03"],
    ["3:nosuchdistro"],
    ["zz3"],
    ["3", "--memory", "-1"],
    ["3", "--memory", "99999999"],
    ["3", "--disk-size", "0"],
    ["3", "--timeout", "-5"],
    ["3", "--timeout", "999999"],
    ["3", "--vcpus", "0"],
    ["3", "--virt-type", "xen"],
    ["3", "--network", "nosuchkind:x"],
    ["3", "--bridge", "nosuchbr0"],
    ["3", "--bridge", "br0", "--direct", "eth0"],
    ["3", "--memory", "lots"],
    ["3", "--no-such-option"],
]


def test_bad_input_exits_2_with_one_line_and_touches_nothing(rlab: Lab) -> None:
    assert rlab.run("list").returncode == 0  # the lab itself works
    before = _snapshot(rlab)
    for args in BAD_INPUT:
        result = rlab.run("up", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert _snapshot(rlab) == before


def test_a_labs_cloud_config_cannot_run_code_on_the_host(rlab: Lab, tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    evil = tmp_path / "lab.yaml"
    evil.write_text(
        "#cloud-config\nruncmd:\n"
        f"  - \"{{{{ cycler.__init__.__globals__.os.popen('touch {witness}').read() }}}}\"\n"
    )
    before = _snapshot(rlab)
    result = rlab.run("up", "3", "--cloud-config", str(evil))
    assert result.returncode == 2, result.stderr
    assert "unsafe" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not witness.exists()
    assert _snapshot(rlab) == before


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("[defaults]\nmemroy = 512\n", "unknown key"),
        ("[defaults\n", "not valid TOML"),
        ('[defaults]\nmemory = "lots"\n', "wrong type"),
        ('[[pools]]\nstem = "vr"\nmac_prefix = "52:54"\n', "mac_prefix"),
        ("[nonsense]\n", "unknown config section"),
        # A plugin's section is checked when the plugins load, still before anything is made.
        ('[libvirt_network]\nsubnett = "10.0.0.0/24"\n', "unknown key"),
    ],
)
def test_a_broken_config_is_bad_input(rlab: Lab, config_text: str, message: str) -> None:
    path = rlab.state / "broken.toml"
    path.write_text(config_text)
    env = {**rlab.env(), "VNODE_CONFIG": str(path)}
    result = subprocess.run(
        [*VNODE, "up", "3"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_config_file_named_by_vnode_config_is_bad_input(rlab: Lab) -> None:
    env = {**rlab.env(), "VNODE_CONFIG": str(rlab.state / "absent.toml")}
    result = subprocess.run(
        [*VNODE, "list"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_missing_or_unreadable_images_are_caught_before_start(rlab: Lab) -> None:
    before = _snapshot(rlab)
    missing = rlab.run("up", "3:d13")
    assert missing.returncode == 1
    assert "no image for d13" in missing.stderr and "vnode images" in missing.stderr
    private = rlab.run("up", "3:u24.04")
    assert private.returncode == 1
    assert "not world-readable" in private.stderr
    assert _snapshot(rlab) == before


def test_a_state_dir_others_can_change_is_refused_and_doctor_says_so(rlab: Lab) -> None:
    before = _snapshot(rlab)
    mode = rlab.state.stat().st_mode & 0o7777
    rlab.state.chmod(0o777)  # anyone could swap the keys or disks vnode keeps there
    try:
        result = rlab.run("up", "3")
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"{rlab.state} is writable by others" in result.stderr
        doctor = rlab.run("doctor", "--json")
        paths = [v for v in json.loads(doctor.stdout) if v["check"] == "paths"]
        assert paths[0]["status"] == "fail" and "writable by others" in paths[0]["message"]
    finally:
        rlab.state.chmod(mode)
    assert _snapshot(rlab) == before
    doctor = rlab.run("doctor", "--json")
    assert [v["status"] for v in json.loads(doctor.stdout) if v["check"] == "paths"] == ["ok"]


def test_a_state_dir_under_root_is_refused(rlab: Lab) -> None:
    text = rlab.config_path.read_text().replace(f'state = "{rlab.state}"', 'state = "/root/vnode"')
    path = rlab.state / "under-root.toml"
    path.write_text(text)
    env = {**rlab.env(), "VNODE_CONFIG": str(path)}
    result = subprocess.run(
        [*VNODE, "up", "3"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "under /root" in result.stderr
    assert not Path("/root/vnode").exists()


def test_a_node_that_never_answers_times_out_alone_while_others_wait_their_turn(
    rlab: Lab,
) -> None:
    """One `up` of a node that boots and of one that never answers (the test store's d11):
    the second times out alone and leaves nothing. Meanwhile a second `up` and a `stop` of
    the first node take its lock too: they wait, instead of pulling the node from under the
    first `up` while it waits."""
    first = subprocess.Popen(
        [*VNODE, "up", "1", "2:d11", "--timeout", "150", "--json"],
        env=rlab.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    second = subprocess.Popen(
        [*VNODE, "up", "1", "--no-wait", "--json"],
        env=rlab.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    name = rlab.name(1)
    deadline = time.monotonic() + 120
    while name not in domain_names(rlab.stem) and time.monotonic() < deadline:
        time.sleep(0.2)
    stop = subprocess.Popen(
        [*VNODE, "stop", "1"], env=rlab.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out1, err1 = first.communicate(timeout=400)
    out2, err2 = second.communicate(timeout=400)
    _, stop_err = stop.communicate(timeout=400)
    assert first.returncode == 1, err1
    by_name = {n["name"]: n for n in json.loads(out1)}
    ready, stuck = by_name[name], by_name[rlab.name(2)]
    assert ready["state"] == "ready"  # not destroyed nor stopped under its feet
    assert stuck["state"] == "timeout"
    assert "console|" in stuck["detail"]  # the last lines of its console
    assert rlab.name(2) not in domain_names(rlab.stem)
    assert not (rlab.state / "nodes" / rlab.name(2)).exists()
    assert rlab.name(2) not in rlab.known_hosts.read_text()
    assert second.returncode == 0, err2
    assert stop.returncode == 0, stop_err
    assert json.loads(out2)[0]["state"] == "started"
    assert "waiting for another vnode" in err2
    assert [d for d in domain_names(rlab.stem) if d == name] == [name]
    assert str(rlab.state / "nodes" / name / "disk.qcow2") in domain_xml(name)


def _readable_by_nobody(path: Path) -> bool:
    probe = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "head", "-c1"]
    return subprocess.run([*probe, str(path)], capture_output=True, check=False).returncode == 0


def test_key_files_are_private(rlab: Lab) -> None:
    assert (rlab.state / "ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    # Made by the test above, maybe stopped there: running, its files are QEMU's.
    assert rlab.run("start", "1").returncode == 0
    node = rlab.state / "nodes" / rlab.name(1)
    seed = node / "seed.iso"  # holds the host private key
    assert seed.stat().st_mode & 0o777 == 0o600
    assert seed.owner() in ("root", "libvirt-qemu")
    # The disk holds the guest's host keys: the qemu user (libvirt chowns it) and root only,
    # and the node's directory lets no one else list it.
    assert node.stat().st_mode & 0o777 == 0o711
    disk = node / "disk.qcow2"
    assert disk.stat().st_mode & 0o777 == 0o600 and disk.owner() == "libvirt-qemu"
    for path in node.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
        assert not _readable_by_nobody(path), path
    # ... and QEMU, which opened them all, runs the guest.
    assert _domain_state(rlab.name(1)) == "running"


def _domain_state(name: str) -> str:
    virsh = ["virsh", "-q", "-c", "qemu:///system", "domstate", name]
    return subprocess.run(virsh, capture_output=True, text=True, check=False).stdout.strip()


def _define_marked(lab: Lab, name: str, fields: dict[str, str]) -> None:
    """A domain (never started) bearing vnode's mark with these fields, as any libvirt client
    could write it: the mark is outside vnode's control."""
    from xml.sax.saxutils import escape

    mark = "".join(f"<vnode:{k}>{escape(v)}</vnode:{k}>" for k, v in fields.items())
    xml = f"""<domain type="qemu"><name>{name}</name><memory unit="MiB">64</memory>
<metadata><vnode:node xmlns:vnode="urn:x-vnode:node:1"><vnode:created-by>vnode</vnode:created-by>
<vnode:dir>{lab.state}/nodes/{name}</vnode:dir>{mark}</vnode:node></metadata>
<os><type arch="x86_64">hvm</type></os></domain>"""
    path = lab.state / f"{name}.xml"
    path.write_text(xml)
    subprocess.run(["virsh", "-q", "define", str(path)], check=True, capture_output=True)


def test_a_domain_with_a_bad_mark_is_listed_as_damaged_and_never_configures_ssh(
    rlab: Lab, tmp_path: Path
) -> None:
    injected = rlab.name(20)
    bad_number = rlab.name(21)
    other_name = rlab.name(22)
    good = {"pool": rlab.stem, "distro": "d12", "mac": "52:54:00:e7:00:20", "network": "libvirt"}
    _define_marked(
        rlab,
        injected,
        {**good, "number": "20", "ip": '192.0.2.7\n  ProxyCommand sh -c "id > /tmp/pwned"'},
    )
    _define_marked(rlab, bad_number, {**good, "number": "x", "ip": "10.231.0.9"})
    # The name says 22, the mark 5: an address found through the mark would be vnode05's.
    _define_marked(rlab, other_name, {**good, "number": "5", "ip": "10.231.0.5"})
    try:
        code, listed = rlab.run_json("list")
        assert code == 0
        states = {entry["name"]: entry for entry in listed}
        for name in (injected, bad_number, other_name):
            assert states[name]["state"] == "damaged", listed
            assert states[name]["damage"], listed
        assert "ip" in states[injected]["damage"] and states[injected]["ip"] is None

        config = rlab.run("ssh-config")
        assert config.returncode == 0, config.stderr
        assert "ProxyCommand" not in config.stdout and "192.0.2.7" not in config.stdout
        path = tmp_path / "ssh_config"
        path.write_text(config.stdout)
        resolved = subprocess.run(
            ["ssh", "-G", "-F", str(path), injected], capture_output=True, text=True, check=True
        )
        assert "proxycommand" not in resolved.stdout.lower()
        for fmt in ("ini", "yaml", "json"):
            inventory = rlab.run("inventory", "--format", fmt)
            assert inventory.returncode == 0, inventory.stderr
            assert "ProxyCommand" not in inventory.stdout and "10.231.0.5" not in inventory.stdout
        reached = rlab.run("ssh", injected, "true")
        assert reached.returncode == 1 and len(reached.stderr.strip().splitlines()) == 1

        destroyed = rlab.run("destroy", "--all")
        assert destroyed.returncode == 0, destroyed.stderr
        assert not {injected, bad_number, other_name} & domain_names(rlab.stem)
    finally:
        for name in (injected, bad_number, other_name):
            subprocess.run(["virsh", "-q", "undefine", name], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("moment", "sigint"),
    [
        # At the starting gate (some nodes made and paused, others still being made) ...
        ("starting with the others", signal.SIG_DFL),
        # ... and later, in a background job of a script, which starts with SIGINT ignored.
        ("booting", signal.SIG_IGN),
    ],
)
def test_interrupting_up_leaves_every_node_whole_or_absent(
    rlab: Lab, moment: str, sigint: signal.Handlers
) -> None:
    numbers = (4, 5, 6)
    process = subprocess.Popen(
        [*VNODE, "up", *map(str, numbers)],
        env=rlab.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if moment in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert "nodes left whole" in stderr
    states = {n["name"]: n["state"] for n in rlab.run_json("list")[1]}
    listed = set(states)
    # A node left behind runs: none is left paused at the gate.
    assert set(states.values()) <= {"running"}, states
    known = rlab.known_hosts.read_text()
    for number in numbers:
        name = rlab.name(number)
        node_dir = rlab.state / "nodes" / name
        parts = {
            "domain": name in domain_names(rlab.stem),
            "listed": name in listed,
            "disk": (node_dir / "disk.qcow2").exists(),
            "seed": (node_dir / "seed.iso").exists(),
            "known_host": f"{name} " in known,
        }
        assert len(set(parts.values())) == 1, f"{name} is half-made: {parts}"
    assert any(rlab.name(n) in listed for n in numbers), "the interrupt came too late to test"
    assert rlab.run("destroy", *map(str, numbers)).returncode == 0


def test_kill_9_during_up_leaves_nothing_later_commands_trip_over(rlab: Lab) -> None:
    name, never_defined = rlab.name(8), rlab.name(9)
    up = subprocess.Popen(
        [*VNODE, "up", "8"], env=rlab.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while name not in domain_names(rlab.stem) and time.monotonic() < deadline:
        time.sleep(0.1)
    up.send_signal(signal.SIGKILL)  # no handler runs: the node is as the kill found it
    up.wait(timeout=30)
    # What a kill between making the node's directory and defining its domain leaves.
    (rlab.state / "nodes" / never_defined).mkdir(mode=0o711)
    (rlab.state / "nodes" / never_defined / "disk.qcow2").write_bytes(b"")

    code, listed = rlab.run_json("list")
    assert code == 0 and name in {n["name"] for n in listed}
    doctor = json.loads(rlab.run("doctor", "--json").stdout)
    leftovers = [v for v in doctor if v["check"] == "leftovers"]
    assert leftovers[0]["status"] == "warn" and never_defined in leftovers[0]["message"]

    destroyed = rlab.run("destroy", "--all")
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"{name}: destroyed" in destroyed.stdout
    assert f"{never_defined}: removed what was left without a domain" in destroyed.stdout
    assert name not in domain_names(rlab.stem)
    assert not (rlab.state / "nodes" / name).exists()
    assert not (rlab.state / "nodes" / never_defined).exists()
    assert name not in rlab.known_hosts.read_text()
    doctor = json.loads(rlab.run("doctor", "--json").stdout)
    assert [v["status"] for v in doctor if v["check"] == "leftovers"] == ["ok"]
    # The node's lock died with the process: the node can be made again at once.
    assert rlab.run("up", "8", "--no-wait").returncode == 0
    assert rlab.run("destroy", "8").returncode == 0


def _domstate(name: str) -> str:
    result = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "domstate", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else "gone"


def test_kill_9_during_destroy_leaves_what_doctor_reports_and_destroy_removes(
    rlab: Lab,
) -> None:
    """`destroy` killed at several points: while its guest is being stopped (a real kill,
    as soon as the domain stops running), after the domain went and before the files did,
    and after the files went and before the known_hosts entry did (the last two are the
    states those kills leave, made by hand: the windows are too short to hit)."""
    killed, files_left, entry_left = rlab.name(10), rlab.name(11), rlab.name(12)
    code, made = rlab.run_json("up", "10", "11", "12", "--no-wait")
    assert code == 0 and {m["state"] for m in made} == {"started"}, made
    destroy = subprocess.Popen(
        [*VNODE, "destroy", "10"],
        env=rlab.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while destroy.poll() is None and _domstate(killed) == "running":
        time.sleep(0.02)
    destroy.send_signal(signal.SIGKILL)
    destroy.wait(timeout=30)
    for name in (files_left, entry_left):
        subprocess.run(["virsh", "-q", "destroy", name], capture_output=True, check=False)
        subprocess.run(["virsh", "-q", "undefine", name], capture_output=True, check=True)
    shutil.rmtree(rlab.state / "nodes" / entry_left)

    # Every command still works, and what is left is reported.
    code, listed = rlab.run_json("list")
    assert code == 0, listed
    assert not {files_left, entry_left} & {n["name"] for n in listed}
    doctor = json.loads(rlab.run("doctor", "--json").stdout)
    leftovers = " ".join(v["message"] for v in doctor if v["check"] == "leftovers")
    assert f"{files_left} (a directory, no domain)" in leftovers, leftovers
    assert f"{entry_left} (a known_hosts entry, no node)" in leftovers, leftovers
    if _domstate(killed) == "gone" and (rlab.state / "nodes" / killed).exists():
        assert f"{killed} (a directory, no domain)" in leftovers, leftovers

    destroyed = rlab.run("destroy", "--all")
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"{files_left}: removed what was left without a domain" in destroyed.stdout
    assert f"{entry_left}: removed what was left without a domain" in destroyed.stdout
    for name in (killed, files_left, entry_left):
        assert name not in domain_names(rlab.stem)
        assert not (rlab.state / "nodes" / name).exists()
        assert name not in rlab.known_hosts.read_text()
    doctor = json.loads(rlab.run("doctor", "--json").stdout)
    assert [v["status"] for v in doctor if v["check"] == "leftovers"] == ["ok"]
    assert rlab.run("up", "10", "--no-wait").returncode == 0
    assert rlab.run("destroy", "10").returncode == 0


def test_two_first_ups_make_vnodes_network_once(host_ready: None, store: Path) -> None:
    lab = make_lab("vf", image_store=store)  # its network does not exist yet
    try:
        ups = [
            subprocess.Popen(
                [*VNODE, "up", number, "--no-wait"],
                env=lab.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for number in ("1", "2")
        ]
        for up in ups:
            _, err = up.communicate(timeout=300)
            assert up.returncode == 0, err
        assert lab.network in subprocess.run(
            ["virsh", "-q", "net-list", "--all", "--name"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert {lab.name(1), lab.name(2)} <= domain_names(lab.stem)
    finally:
        cleanup_lab(lab)


def test_disk_full_while_creating_is_reported_and_cleaned(host_ready: None, store: Path) -> None:
    mount = Path(f"/var/lib/vnode-test-full-{os.getpid()}")
    mount.mkdir(mode=0o755)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k,mode=0755", "tmpfs", str(mount)], check=True
    )
    lab = make_lab("vf", image_store=store, state=mount)
    try:
        code, nodes = lab.run_json("up", "1")
        assert code == 1
        assert nodes[0]["state"] == "failed"
        assert "No space left" in nodes[0]["detail"]
        assert lab.name(1) not in domain_names(lab.stem)
        assert not (mount / "nodes" / lab.name(1)).exists()
    finally:
        cleanup_lab(lab)
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()
