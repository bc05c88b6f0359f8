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
