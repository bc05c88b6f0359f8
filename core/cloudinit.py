"""Cloud-init NoCloud data for one node, and the seed image that carries it."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import attrs

from vnode.keys import KeyPair
from vnode.model import NodePlan, StaticAddress
from vnode.templating import render_yaml
from vnode.userconfig import merge_user_data

# The guest's NIC, renamed by cloud-init (matched by MAC): without the rename the sysconfig
# and networkd renderers write configuration for a device called after the ethernets key,
# which the real NIC (eth0, enp1s0) is not; with it all renderers agree, and every guest's
# NIC has the same name whatever its distro's naming scheme.
GUEST_NIC = "vnode0"


def guest_nic(index: int) -> str:
    """The guest's name of the node's NIC ``index``: vnode0 (its own), vnode1, vnode2, ..."""
    return f"vnode{index}"


# ISO9660 names are 8.3 upper case; Rock Ridge and Joliet carry the names cloud-init reads.
_ISO_NAMES = {"user-data": "USERDATA", "meta-data": "METADATA", "network-config": "NETCFG"}


@attrs.frozen
class SeedFiles:
    user_data: str
    meta_data: str
    network_config: str

    def items(self) -> list[tuple[str, str]]:
        return [
            ("user-data", self.user_data),
            ("meta-data", self.meta_data),
            ("network-config", self.network_config),
        ]


CPU_HOTPLUG_RULE = (
    'SUBSYSTEM=="cpu", ACTION=="add", TEST=="online", ATTR{online}=="0", ATTR{online}="1"\n'
)


def render_seed(node: NodePlan, *, authorized_key: str, host_key: KeyPair) -> SeedFiles:
    """The node's NoCloud files, from its plan (address, DNS domain) and its new host key."""
    fqdn = f"{node.name}.{node.dns_domain}" if node.dns_domain else node.name
    user_data = render_yaml(
        "user-data.j2",
        hostname=node.name,
        fqdn=fqdn,
        authorized_keys=[authorized_key],
        host_key_private=host_key.private_openssh,
        host_key_public=host_key.public_openssh,
        cpu_hotplug_rule=CPU_HOTPLUG_RULE if node.max_vcpu_count > node.vcpus else "",
    )
    user_data = merge_user_data(user_data, node.user_cloud_config, node.cloud_config_overrides)
    # A new instance-id per creation makes cloud-init treat a re-created node as new.
    meta_data = render_yaml(
        "meta-data.j2", instance_id=f"{node.name}-{uuid.uuid4().hex[:12]}", hostname=node.name
    )
    network_config = render_yaml("network-config.j2", nics=guest_nics(node))
    return SeedFiles(user_data=user_data, meta_data=meta_data, network_config=network_config)


@attrs.frozen
class GuestNic:
    name: str
    mac: str
    address: StaticAddress | None


def guest_nics(node: NodePlan) -> list[GuestNic]:
    """Every NIC as the guest gets it: its name, its MAC, its static address (None: DHCP)."""
    own = GuestNic(GUEST_NIC, node.mac, node.address)
    further = [GuestNic(guest_nic(i), n.mac, n.address) for i, n in enumerate(node.nics, 1)]
    return [own, *further]


def seed_iso(seed: SeedFiles) -> bytes:
    """The NoCloud seed image (volume label ``cidata``) as bytes."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in seed.items():
        if not text:  # an empty network-config would be read as "no network at all"
            continue
        data = text.encode()
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{_ISO_NAMES[name]}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write_seed_iso(path: Path, seed: SeedFiles) -> None:
    """Write the NoCloud seed as 0600: it holds the host private key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed_iso(seed))
