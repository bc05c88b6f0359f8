"""A third party's network plugin, published as its own distribution, used for real: its
own config section (checked by the core), its own doctor check, and a node booted through
it to SSH.

The plugin (tests/fixtures/labnet) attaches nodes to a libvirt network "the lab runs": here
an isolated network this module creates, with a DHCP range and no reservations, so the
node's address can only come from the plugin reading the leases.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Lab, free_octet
from tests.harness.pluginenv import make_plugin_env, pip

pytestmark = pytest.mark.integration

LABNET = REPO / "tests" / "fixtures" / "labnet"


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def lab_network(lab: Lab) -> Iterator[str]:
    """An isolated libvirt network with plain DHCP: what a lab might already run."""
    octet = free_octet("10.233")
    name = f"vtln-{uuid.uuid4().hex[:6]}"
    xml = Path(lab.state / f"{name}.xml")
    xml.write_text(
        f"""<network><name>{name}</name><bridge name="{name}"/>
  <ip address="10.233.{octet}.1" netmask="255.255.255.0">
    <dhcp><range start="10.233.{octet}.100" end="10.233.{octet}.200"/></dhcp>
  </ip></network>"""
    )
    assert _virsh("net-define", str(xml)).returncode == 0
    try:
        assert _virsh("net-start", name).returncode == 0
        yield name
    finally:
        _virsh("net-destroy", name)
        _virsh("net-undefine", name)


@pytest.fixture(scope="module")
def labnet(lab: Lab, lab_network: str) -> Iterator[Lab]:
    """The lab with the plugin installed (in an environment of this module's own: the other
    workers' vnode never sees it) and a [labnet] section naming the network."""
    python = make_plugin_env(lab.state / "python")
    result = pip(python, "install", "--no-deps", str(LABNET))
    assert result.returncode == 0, result.stderr
    config = lab.state / "labnet.toml"
    config.write_text(lab.config_path.read_text() + f'\n[labnet]\nnetwork = "{lab_network}"\n')
    try:
        yield Lab(
            config_path=config,
            state=lab.state,
            network=lab.network,
            subnet_prefix=lab.subnet_prefix,
            stem=lab.stem,
            python=python,
        )
    finally:
        pip(python, "uninstall", "-y", "vnode-labnet")


def _with_config(lab: Lab, extra: str) -> dict[str, str]:
    path = lab.state / f"variant-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(lab.config_path.read_text() + extra)
    return {**lab.env(), "VNODE_CONFIG": str(path)}


def test_the_plugin_is_listed_with_what_it_provides(labnet: Lab) -> None:
    plugins = {p["name"]: p for p in json.loads(labnet.run("plugins", "list", "--json").stdout)}
    info = plugins["labnet"]
    assert info["status"] == "ok"
    assert info["distribution"] == "vnode-labnet"
    assert set(info["kinds"]) == {"config", "doctor", "network"}
    assert info["provides"] == ["labnet"]


def test_its_doctor_check_runs_in_vnode_doctor(labnet: Lab, lab_network: str) -> None:
    result = labnet.run("doctor", "--json", "--network", "labnet")
    verdicts = [v for v in json.loads(result.stdout) if v["check"] == "labnet"]
    # Once from the plugin's own doctor check, once from the backend's diagnosis.
    assert verdicts and all(v["status"] == "ok" for v in verdicts), verdicts
    assert all(lab_network in v["message"] for v in verdicts)


def test_its_doctor_check_fails_for_a_network_that_is_not_there(labnet: Lab) -> None:
    env = _with_config(labnet, "").copy()
    text = Path(env["VNODE_CONFIG"]).read_text()
    Path(env["VNODE_CONFIG"]).write_text(
        text.replace("[labnet]\nnetwork = ", '[labnet]\nnetwork = "vtln-absent"\n# was ')
    )
    result = subprocess.run(
        [labnet.python, "-m", "vnode.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert any(
        line.split()[:2] == ["fail", "labnet"] and "'vtln-absent' does not exist" in line
        for line in result.stdout.splitlines()
    ), result.stdout


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('\n[labnet]\nnetwrk = "x"\n', "unknown key(s) in [labnet]: netwrk"),
        ('\n[labnet]\nmodel = "rtl8139"\n', "bad value in [labnet]"),
    ],
)
def test_the_core_checks_the_plugins_section(labnet: Lab, extra: str, words: str) -> None:
    env = _with_config(labnet, "")
    path = Path(env["VNODE_CONFIG"])
    # A second [labnet] table would be invalid TOML: replace the one the fixture wrote.
    path.write_text(path.read_text().split("\n[labnet]")[0] + extra)
    result = subprocess.run(
        [labnet.python, "-m", "vnode.cli", "up", "9", "--network", "labnet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert words in result.stderr and str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_node_boots_through_the_plugin_and_its_address_comes_from_the_leases(
    labnet: Lab, lab_network: str
) -> None:
    code, nodes = labnet.run_json("up", "9", "--network", "labnet")
    assert code == 0, nodes
    node = nodes[0]
    assert node["state"] == "ready", node
    assert node["ip"].startswith("10.233.")
    result = labnet.ssh("9", "hostname; ip -4 -o addr show scope global")
    assert result.returncode == 0, result.stderr
    hostname, addresses = result.stdout.split("\n", 1)
    assert hostname == labnet.name(9)
    assert f"inet {node['ip']}/24" in addresses
    listed = {n["name"]: n for n in labnet.run_json("list")[1]}
    assert listed[labnet.name(9)]["network"] == f"labnet:{lab_network}"
    assert listed[labnet.name(9)]["ip"] == node["ip"]
    assert labnet.run("destroy", "9").returncode == 0
