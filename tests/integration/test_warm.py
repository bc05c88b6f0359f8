"""Warm clones end to end: one template made once, nodes cloned from it by `up --warm`.

Booting is the expensive part under TCG: the module boots one template (Debian 13, whose
network stack is Ubuntu's: netplan + systemd-networkd; 512 MiB, 1 vCPU) and restores two
clones on the lab's isolated libvirt network (static addresses) and two on the site's bridge
(addresses from the site's DHCP, one of them unknown to its DNS); every test then checks what
a clone must be (a machine of its own, as strict as a cold node) over SSH with vnode's
known_hosts. Debian 12 clones are checked the same way on a second host (test_two_hosts.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import VNODE, Lab, domain_names
from tests.integration.clones import DISTINCT, probe
from tests.integration.conftest import Site

pytestmark = pytest.mark.integration

# Two clones on the libvirt network; two on the bridge with the site's DHCP reservations,
# node 1 in the site's DNS, node 2 not (vnode learns its address another way).
A, B = 3, 4
ON_THE_BRIDGE = (1, 2)
DISTRO = "d13"
SHAPE = ("--memory", "512", "--vcpus", "1", "--virt-type", "qemu")


@pytest.fixture(scope="module")
def wlab(bridge_site: Site) -> Lab:
    """The site's lab (removed with it): its default network is the bridge, and it has its
    own isolated libvirt network too."""
    return bridge_site.lab


@pytest.fixture(scope="module")
def template(wlab: Lab) -> dict:
    # First a make killed with kill -9 once its guest runs: its directory stays without a
    # record and its transient domain keeps running. The make after it clears both.
    killed = subprocess.Popen(
        [*VNODE, "template", "make", DISTRO, *SHAPE],
        env=wlab.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not _template_domains(wlab) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert _template_domains(wlab), "the killed make's guest should still be running"
    result = wlab.run("template", "make", DISTRO, *SHAPE, "--json", timeout=1200)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _template_domains(lab: Lab) -> list[str]:
    return [name for name in domain_names(lab.stem) if "tpl-" in name]


@pytest.fixture(scope="module")
def clones(wlab: Lab, template: dict) -> dict[str, dict]:
    started = time.monotonic()
    code, nodes = wlab.run_json(
        "up",
        "--warm",
        f"{A}:{DISTRO}",
        f"{B}:{DISTRO}",
        "--network",
        "libvirt",
        *SHAPE,
        timeout=600,
    )
    assert code == 0, nodes
    return {"seconds": time.monotonic() - started, **{node["name"]: node for node in nodes}}


@pytest.fixture(scope="module")
def probed(wlab: Lab, clones: dict) -> dict[int, dict]:
    """What each clone says about itself, with the host's clock around the question."""
    return {number: probe(wlab, number) for number in (A, B)}


def test_bad_template_input_is_one_line_and_exit_2(wlab: Lab) -> None:
    for args in (
        ("template", "make", "nosuchdistro"),
        ("template", "make", "d12", "--memory", "0"),
        ("template", "make", "d12", "--virt-type", "bogus"),
        ("template", "remove", "nosuchtemplate"),
    ):
        result = wlab.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any((wlab.state / "templates").glob("*/record.json"))


def test_template_is_listed(wlab: Lab, template: dict) -> None:
    result = wlab.run("template", "list", "--json")
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)
    assert listed["key"] == template["key"]
    assert (listed["distro"], listed["memory_mib"], listed["vcpus"]) == (DISTRO, 512, 1)
    assert listed["virt_type"] == "qemu"
    directory = Path(listed["directory"])
    assert (directory / "disk.qcow2").stat().st_mode & 0o777 == 0o444
    assert (directory / "state.save").is_file()
    # The template's domain was transient and is gone; only clones are domains.
    assert not any("tpl-" in name for name in domain_names(wlab.stem))


def test_up_warm_makes_ready_clones(wlab: Lab, clones: dict) -> None:
    for number in (A, B):
        node = clones[wlab.name(number)]
        assert node["state"] == "ready", node
        assert node["boot"] == "warm"
        assert node["ip"] == wlab.ip_of(number)
    listed = {n["name"]: n for n in json.loads(wlab.run("list", "--json").stdout)}
    assert {wlab.name(A), wlab.name(B)} <= set(listed)
    assert listed[wlab.name(A)]["state"] == "running"
    for number in (A, B):  # the clone's overlay and identity: root's and qemu's alone
        node = wlab.state / "nodes" / wlab.name(number)
        assert node.stat().st_mode & 0o777 == 0o711
        assert (node / "disk.qcow2").stat().st_mode & 0o777 == 0o600
        for path in node.iterdir():
            assert path.stat().st_mode & 0o077 == 0, path


def test_clones_are_machines_of_their_own(wlab: Lab, probed: dict) -> None:
    one, two = probed[A], probed[B]
    for number, seen in probed.items():
        assert seen["hostname"] == wlab.name(number)
        assert seen["address"] == f"{wlab.ip_of(number)}/24"
        assert seen["mac"].endswith(f":{number:02d}")
    for field in DISTINCT:
        assert one[field] != two[field], field


# What else a clone must not share with the template or its siblings: the journal's machine
# ID (its newest entry's, once journald restarted), D-Bus's machine-id where it is a file,
# the credentials key, the random seeds and DHCP leases (and so dhclient's DUID).
SECRETS = (
    # journald restarts 15 s after the clone's set-up (warm-apply.sh), later under load.
    "for i in $(seq 90); do systemd-cat -t vnode-probe echo probe; sleep 1; "
    "id=$(journalctl -o export -t vnode-probe -n 1 | sed -n 's/^_MACHINE_ID=//p'); "
    '[ "$id" != "$(cat /etc/machine-id)" ] || break; done; echo "$id"; '
    "if [ -f /var/lib/dbus/machine-id ]; then cat /var/lib/dbus/machine-id; else echo none; fi; "
    "for f in /var/lib/systemd/credential.secret /var/lib/systemd/random-seed "
    "/var/lib/urandom/random-seed /var/lib/dhcp/*.leases; do "
    '[ -e "$f" ] && echo "$f $(sha256sum < "$f" | cut -c1-16)"; done; true'
)


def test_clones_share_no_secret_or_client_identity(wlab: Lab, probed: dict) -> None:
    import concurrent.futures

    seen = {}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # each may wait for journald
        answers = dict(
            zip((A, B), pool.map(lambda n: wlab.ssh(str(n), SECRETS), (A, B)), strict=True)
        )
    for number, result in answers.items():
        assert result.returncode == 0, result.stderr
        journal_id, dbus_id, *files = result.stdout.splitlines()
        assert journal_id == probed[number]["machine_id"], result.stdout
        assert dbus_id in ("none", probed[number]["machine_id"])
        seen[number] = dict(line.split() for line in files)
    # A file both have (made since the restore) is each one's own.
    for path in set(seen[A]) & set(seen[B]):
        assert seen[A][path] != seen[B][path], path


def test_host_key_is_the_one_vnode_made_and_trusts(wlab: Lab, probed: dict) -> None:
    known = dict(line.split(" ", 1) for line in wlab.known_hosts.read_text().splitlines())
    for number, seen in probed.items():
        # Only the key vnode generated: every key the template made was deleted before it
        # was saved, so none of the template's can be in a clone.
        assert seen["host_keys"] == 2  # ssh_host_ed25519_key and its .pub
        assert known[wlab.name(number)] == seen["host_key"]


def test_clock_is_the_hosts(probed: dict) -> None:
    for seen in probed.values():
        before, after = seen["window"]
        assert before - 2 <= seen["clock"] <= after + 2, (seen["clock"], before, after)


def test_root_logs_in_with_the_users_key_only(wlab: Lab, probed: dict) -> None:
    user_key = (wlab.state / "ssh" / "id_ed25519.pub").read_text().split()[:2]
    for seen in probed.values():
        assert [line.split()[:2] for line in seen["authorized_keys"] if line.strip()] == [user_key]


def test_log_shows_the_clones_console(wlab: Lab, clones: dict) -> None:
    result = wlab.run("log", str(A))
    assert result.returncode == 0, result.stderr
    assert f"vnode-identity: ready as {wlab.name(A)}" in result.stdout


def test_plan_says_which_nodes_boot_cold_and_why(
    wlab: Lab, template: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned only (nothing is made): the reasons a user reads on stderr."""
    from vnode import api
    from vnode.session import Session

    monkeypatch.setenv("VNODE_CONFIG", str(wlab.config_path))
    lab_config = tmp_path / "lab.yaml"
    lab_config.write_text("#cloud-config\nruncmd: [[true]]\n")
    shape = {"memory": 512, "vcpus": 1, "virt_type": "qemu"}
    node = f"5:{DISTRO}"
    with Session.open() as session:
        warm_plan = api.plan_up([node, "6:d12"], api.UpOptions(warm=True, **shape), session=session)
        by_node = {c.node: c for c in warm_plan.warm}
        assert by_node[wlab.name(5)].warm
        assert by_node[wlab.name(5)].template.key == template["key"]
        assert (
            by_node[wlab.name(6)].warm and "no template of d12 yet" in by_node[wlab.name(6)].reason
        )
        bigger = api.plan_up([node], api.UpOptions(warm=True, memory=1024), session=session)
        assert "no template of this shape" in bigger.warm[0].reason
        for options, words in (
            (api.UpOptions(warm=True, cloud_config=(str(lab_config),), **shape), "cloud-config"),
            (api.UpOptions(warm=True, wait_cloud_init=True, **shape), "--wait-cloud-init"),
        ):
            [choice] = api.plan_up([node], options, session=session).warm
            assert not choice.warm and words in choice.reason
        assert api.plan_up([node], api.UpOptions(**shape), session=session).warm == ()
    # [defaults] warm = true: up clones without --warm; --cold (warm=False) boots.
    warm_by_default = tmp_path / "warm.toml"
    warm_by_default.write_text(
        wlab.config_path.read_text().replace("[defaults]\n", "[defaults]\nwarm = true\n", 1)
    )
    with Session.open([warm_by_default]) as session:
        [choice] = api.plan_up([node], api.UpOptions(**shape), session=session).warm
        assert choice.warm and choice.template.key == template["key"]
        assert api.plan_up([node], api.UpOptions(warm=False, **shape), session=session).warm == ()
    assert wlab.name(5) not in domain_names(wlab.stem)


@pytest.fixture(scope="module")
def dhcp_clones(wlab: Lab, clones: dict) -> dict[int, dict]:
    specs = (f"{n}:{DISTRO}" for n in ON_THE_BRIDGE)
    code, nodes = wlab.run_json("up", "--warm", *specs, *SHAPE, timeout=600)
    assert code == 0, nodes
    return {int(node["name"][-2:]): node for node in nodes}


def test_clones_on_the_bridge_take_the_sites_dhcp_addresses(
    bridge_site: Site, dhcp_clones: dict
) -> None:
    for number, clone in dhcp_clones.items():
        reserved = bridge_site.reservation(number)
        assert clone["boot"] == "warm" and clone["state"] == "ready", clone
        assert clone["ip"] == reserved.ip and clone["mac"] == reserved.mac
        result = bridge_site.lab.ssh(str(number), "hostname; ip -4 -o addr show scope global")
        assert result.returncode == 0, result.stderr
        hostname, addresses = result.stdout.split("\n", 1)
        assert hostname == reserved.name and f"inet {reserved.ip}/24" in addresses


def test_clones_are_distinct_dhcp_clients_to_the_site(bridge_site: Site, dhcp_clones: dict) -> None:
    """Two clones of one template ask the site's DHCP server as two clients: networkd's
    client id is a DUID derived from the machine-id, which each clone has of its own (a clone
    keeping the template's would send the template's client id, and the server would take
    the two for one)."""
    # dnsmasq's lease file: expiry, MAC, address, name, client id.
    leases = {
        fields[1]: fields[4]
        for line in bridge_site.leases.read_text().splitlines()
        if len(fields := line.split()) >= 5
    }
    clients = [leases.get(bridge_site.reservation(n).mac) for n in ON_THE_BRIDGE]
    assert None not in clients and "*" not in clients, (clients, leases)
    assert clients[0] != clients[1], clients


def test_template_in_use_is_not_removed(wlab: Lab, template: dict, clones: dict) -> None:
    result = wlab.run("template", "remove", template["key"])
    assert result.returncode == 2
    assert wlab.name(A) in result.stderr
    assert Path(template["directory"], "state.save").is_file()


def test_destroy_leaves_nothing(wlab: Lab, clones: dict, probed: dict) -> None:
    result = wlab.run("destroy", str(A), str(B), *map(str, ON_THE_BRIDGE))
    assert result.returncode == 0, result.stderr
    assert not domain_names(wlab.stem)
    assert not list((wlab.state / "nodes").iterdir())
    known = wlab.known_hosts.read_text() if wlab.known_hosts.exists() else ""
    assert wlab.name(A) not in known and wlab.name(B) not in known


def test_template_remove_removes_it(wlab: Lab, template: dict) -> None:
    result = wlab.run("template", "remove", DISTRO)
    assert result.returncode == 0, result.stderr
    assert template["key"] in result.stdout
    assert not Path(template["directory"]).exists()
    assert json.loads(wlab.run("template", "list", "--json").stdout) == []
