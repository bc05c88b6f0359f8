"""How plain tools reach vnode's nodes: an OpenSSH config and an Ansible inventory.

Pure rendering from :class:`NodeAccess` records; :mod:`vnode.nodeops` gathers them. Both say the
same as ``vnode ssh``: root, vnode's key only, vnode's known_hosts, strict host key checking
with the node's name as the alias (the key was recorded under the name before boot).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import attrs

from vnode.sshwait import Jump

INVENTORY_FORMATS = ("ini", "yaml", "json")
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# A node name as pools make them: also safe as an ssh_config Host pattern (no * ? ! , or
# whitespace) and as an Ansible INI host word.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not _NODE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a node name")


def _check_address(instance: object, attribute: attrs.Attribute, value: str) -> None:
    # Written as ssh's HostName and Ansible's ansible_host: an address, nothing else.
    ipaddress.ip_address(value)


@attrs.frozen
class NodeAccess:
    """One node as ssh and Ansible need it; name and address are checked, for they end up
    in other programs' configuration."""

    name: str = attrs.field(validator=_check_name)
    address: str = attrs.field(validator=_check_address)
    pool: str
    distro: str
    family: str
    # How to get there through the node's hypervisor (OpenSSH options), when its network is
    # not routable from here: see jump_options.
    via: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Credentials:
    """vnode's client key and known_hosts: the same for every node."""

    identity_file: Path
    known_hosts: Path


def jump_options(jump: Jump | None) -> tuple[tuple[str, str], ...]:
    """OpenSSH options that reach a node through its hypervisor, the hypervisor's host key
    checked strictly too: ``ProxyJump``, or a ``ProxyCommand`` when the host has its own
    known_hosts file or key (ProxyJump cannot carry those)."""
    if jump is None:
        return ()
    if jump.known_hosts is None and jump.identity is None:
        return (("ProxyJump", f"{jump.user}@{jump.host}:{jump.port}"),)
    inner = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    if jump.known_hosts is not None:
        inner += ["-o", f"UserKnownHostsFile={jump.known_hosts}"]
    if jump.identity is not None:
        inner += ["-i", str(jump.identity), "-o", "IdentitiesOnly=yes"]
    inner += ["-p", str(jump.port), "-W", "%h:%p", f"{jump.user}@{jump.host}"]
    return (("ProxyCommand", " ".join(shlex.quote(word) for word in inner)),)


def ssh_options(
    name: str, creds: Credentials, via: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The OpenSSH options that make a connection to ``name`` as strict as ``vnode ssh``."""
    return [
        *via,
        ("User", "root"),
        ("IdentityFile", str(creds.identity_file)),
        ("IdentitiesOnly", "yes"),
        ("UserKnownHostsFile", str(creds.known_hosts)),
        ("StrictHostKeyChecking", "yes"),
        ("HostKeyAlias", name),
        ("PasswordAuthentication", "no"),
    ]


def ssh_argv(node: NodeAccess, creds: Credentials, command: Sequence[str]) -> list[str]:
    """The ``ssh`` command line of ``vnode ssh``: the same options as the ssh-config, each an
    argument of its own (no shell between)."""
    options = [*ssh_options(node.name, creds, node.via), ("LogLevel", "ERROR")]
    return [
        "ssh",
        *(f"-o{key}={value}" for key, value in options),
        f"root@{node.address}",
        *command,
    ]


def _ssh_config_value(value: str) -> str:
    # ssh_config splits on whitespace and honours double quotes; no other quoting exists.
    if '"' in value or "\n" in value or "\r" in value:
        raise ValueError(f"{value!r} cannot be written into an ssh config")
    return f'"{value}"' if any(c.isspace() for c in value) or not value else value


def _proxy_command(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r} cannot be written into an ssh config")
    return value


def render_ssh_config(nodes: Sequence[NodeAccess], creds: Credentials) -> str:
    """One ``Host`` block per node, for ``ssh -F``, scp, rsync -e, or an ``Include``."""
    blocks = []
    for node in nodes:
        lines = [f"Host {node.name}", f"  HostName {_ssh_config_value(node.address)}"]
        options = ssh_options(node.name, creds, node.via)
        # ProxyCommand takes the rest of its line as a shell command (its words are quoted
        # for the shell by jump_options): no quotes around it, but one line.
        for key, value in options:
            quoted = _proxy_command(value) if key == "ProxyCommand" else _ssh_config_value(value)
            lines.append(f"  {key} {quoted}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def group_name(kind: str, value: str) -> str:
    """An Ansible group name (letters, digits, underscore): ``pool_vnode``, ``family_debian``."""
    return f"{kind}_{_GROUP_UNSAFE.sub('_', value)}"


def host_vars(node: NodeAccess, creds: Credentials) -> dict[str, str]:
    common = [
        f"-o {shlex.quote(f'{key}={value}')}"
        for key, value in ssh_options(node.name, creds, node.via)
        if key not in ("User", "IdentityFile")
    ]
    return {
        "ansible_host": node.address,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(creds.identity_file),
        "ansible_ssh_common_args": " ".join(common),
        # Quiet interpreter discovery: the cloud images all have python3.
        "ansible_python_interpreter": "auto_silent",
    }


def inventory_groups(nodes: Sequence[NodeAccess]) -> dict[str, list[str]]:
    """Group name -> node names: one group per pool and one per distro family, sorted."""
    groups: dict[str, list[str]] = {}
    for node in nodes:
        for group in (group_name("pool", node.pool), group_name("family", node.family)):
            groups.setdefault(group, []).append(node.name)
    return dict(sorted(groups.items()))


def inventory_data(nodes: Sequence[NodeAccess], creds: Credentials) -> dict[str, object]:
    """The JSON a dynamic inventory script prints for ``--list`` (hostvars in ``_meta``)."""
    groups = inventory_groups(nodes)
    data: dict[str, object] = {
        "_meta": {"hostvars": {node.name: host_vars(node, creds) for node in nodes}},
        "all": {"children": ["ungrouped", *groups]},
        "ungrouped": {"hosts": []},
    }
    data.update({group: {"hosts": names} for group, names in groups.items()})
    return data


def render_inventory(nodes: Sequence[NodeAccess], creds: Credentials, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(inventory_data(nodes, creds), indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        groups = inventory_groups(nodes)
        tree = {
            "all": {
                "hosts": {node.name: host_vars(node, creds) for node in nodes},
                "children": {
                    group: {"hosts": dict.fromkeys(names)} for group, names in groups.items()
                },
            }
        }
        return yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)
    if fmt == "ini":
        lines = []
        for node in nodes:
            pairs = " ".join(
                f"{key}={shlex.quote(value)}" for key, value in host_vars(node, creds).items()
            )
            lines.append(f"{node.name} {pairs}")
        for group, names in inventory_groups(nodes).items():
            lines += ["", f"[{group}]", *names]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown inventory format {fmt!r}")
