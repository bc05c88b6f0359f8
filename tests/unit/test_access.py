"""ssh-config and Ansible inventory rendering: pure logic."""

from __future__ import annotations

import configparser
import json
import shlex
from pathlib import Path

import pytest
import yaml

from vnode.access import Credentials, NodeAccess, render_inventory, render_ssh_config

CREDS = Credentials(
    identity_file=Path("/var/lib/vnode/ssh/id_ed25519"),
    known_hosts=Path("/var/lib/vnode/ssh/known_hosts"),
)
NODES = [
    NodeAccess("vnode01", "10.0.0.101", "vnode", "d12", "debian"),
    NodeAccess("lab-a03", "10.0.1.103", "lab-a", "u24.04", "ubuntu"),
]


def test_ssh_config_has_a_strict_block_per_node() -> None:
    text = render_ssh_config(NODES, CREDS)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2
    first = blocks[0].splitlines()
    assert first[0] == "Host vnode01"
    options = dict(line.split(None, 1) for line in first[1:])
    assert options == {
        "HostName": "10.0.0.101",
        "User": "root",
        "IdentityFile": "/var/lib/vnode/ssh/id_ed25519",
        "IdentitiesOnly": "yes",
        "UserKnownHostsFile": "/var/lib/vnode/ssh/known_hosts",
        "StrictHostKeyChecking": "yes",
        "HostKeyAlias": "vnode01",
        "PasswordAuthentication": "no",
    }


def test_ssh_config_quotes_paths_with_spaces_and_refuses_quotes() -> None:
    spaced = Credentials(Path("/my keys/id"), Path("/my keys/known"))
    assert 'IdentityFile "/my keys/id"' in render_ssh_config(NODES[:1], spaced)
    with pytest.raises(ValueError, match="cannot be written"):
        render_ssh_config(NODES[:1], Credentials(Path('/a"b'), Path("/k")))


def test_no_nodes_is_an_empty_config() -> None:
    assert render_ssh_config([], CREDS) == ""


def test_json_inventory_is_a_dynamic_inventory_listing() -> None:
    data = json.loads(render_inventory(NODES, CREDS, "json"))
    assert data["pool_vnode"] == {"hosts": ["vnode01"]}
    assert data["pool_lab_a"] == {"hosts": ["lab-a03"]}
    assert data["family_debian"] == {"hosts": ["vnode01"]}
    assert data["family_ubuntu"] == {"hosts": ["lab-a03"]}
    assert set(data["all"]["children"]) >= {"pool_vnode", "family_ubuntu"}
    hostvars = data["_meta"]["hostvars"]["vnode01"]
    assert hostvars["ansible_host"] == "10.0.0.101"
    assert hostvars["ansible_user"] == "root"
    assert hostvars["ansible_ssh_private_key_file"] == str(CREDS.identity_file)
    args = shlex.split(hostvars["ansible_ssh_common_args"])
    assert "StrictHostKeyChecking=yes" in args
    assert "HostKeyAlias=vnode01" in args
    assert f"UserKnownHostsFile={CREDS.known_hosts}" in args


def test_yaml_inventory_says_the_same() -> None:
    tree = yaml.safe_load(render_inventory(NODES, CREDS, "yaml"))["all"]
    assert tree["hosts"]["lab-a03"]["ansible_host"] == "10.0.1.103"
    assert set(tree["children"]["family_debian"]["hosts"]) == {"vnode01"}


def test_ini_inventory_quotes_the_ssh_args_as_one_value() -> None:
    text = render_inventory(NODES, CREDS, "ini")
    host_line = text.splitlines()[0]
    name, *pairs = shlex.split(host_line)
    assert name == "vnode01"
    values = dict(pair.split("=", 1) for pair in pairs)
    assert values["ansible_host"] == "10.0.0.101"
    assert "-o HostKeyAlias=vnode01" in values["ansible_ssh_common_args"]
    groups = configparser.ConfigParser(allow_no_value=True, delimiters=("=",))
    groups.read_string(text.split("\n\n", 1)[1])
    assert list(groups["pool_vnode"]) == ["vnode01"]


def test_a_node_behind_its_hypervisor_is_reached_through_it(tmp_path: Path) -> None:
    import subprocess

    from vnode.access import jump_options
    from vnode.sshwait import Jump

    assert jump_options(None) == ()
    assert jump_options(Jump(host="hv2.lab", user="admin", port=2222)) == (
        ("ProxyJump", "admin@hv2.lab:2222"),
    )
    strict = Jump(host="hv2", known_hosts=Path("/k h/known"), identity=Path("/i"))
    ((key, proxy),) = jump_options(strict)
    assert key == "ProxyCommand"
    assert shlex.split(proxy) == [
        *("ssh", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"),
        *("-o", "UserKnownHostsFile=/k h/known", "-i", "/i", "-o", "IdentitiesOnly=yes"),
        *("-p", "22", "-W", "%h:%p", "root@hv2"),
    ]
    behind = NodeAccess("vnode02", "192.168.151.102", "vnode", "d12", "debian", via=((key, proxy),))
    config = tmp_path / "config"
    config.write_text(render_ssh_config([behind], CREDS))
    # OpenSSH's own reading of the block: the proxy command arrives whole, host key strict.
    resolved = subprocess.run(
        ["ssh", "-G", "-F", str(config), "vnode02"], capture_output=True, text=True, check=True
    ).stdout
    options = dict(line.split(" ", 1) for line in resolved.splitlines())
    assert shlex.split(options["proxycommand"])[-3:] == ["-W", "%h:%p", "root@hv2"]
    assert options["hostname"] == "192.168.151.102"
    assert options["stricthostkeychecking"] == "true"
    hostvars = json.loads(render_inventory([behind], CREDS, "json"))["_meta"]["hostvars"]
    ansible_args = shlex.split(hostvars["vnode02"]["ansible_ssh_common_args"])
    assert f"ProxyCommand={proxy}" in ansible_args


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("vnode01", '192.0.2.7\n  ProxyCommand sh -c "id"'),
        ("vnode01", "host.example.org"),
        ("vnode01", "192.0.2.7 -oProxyCommand=id"),
        ("vnode*", "192.0.2.7"),
        ("a b", "192.0.2.7"),
        ("-oProxyCommand=id", "192.0.2.7"),
    ],
)
def test_a_name_or_address_other_programs_would_misread_is_refused(name: str, address: str) -> None:
    with pytest.raises(ValueError):
        NodeAccess(name, address, "vnode", "d12", "debian")


def test_an_ipv6_address_is_a_host_name_too() -> None:
    text = render_ssh_config([NodeAccess("vnode01", "fd00::7", "vnode", "d12", "debian")], CREDS)
    assert "  HostName fd00::7\n" in text


def test_a_proxy_command_is_kept_on_one_line() -> None:
    node = NodeAccess(
        "vnode01", "10.0.0.1", "vnode", "d12", "debian", via=(("ProxyCommand", "a\nb"),)
    )
    with pytest.raises(ValueError, match="cannot be written"):
        render_ssh_config([node], CREDS)
