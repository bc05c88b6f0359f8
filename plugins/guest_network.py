"""A warm clone's network configuration, in the format of each network stack a guest may use
(netplan, NetworkManager, systemd-networkd, ifupdown), and ``persist``, the script that finds
the stack the guest runs and installs its file (``templates/guest-network-persist.sh``): a
clone runs no cloud-init. vnode's apply script brings the NIC up with ``mode``, ``address``
and ``gateway`` at once (iproute2 alone), starts sshd, then runs ``persist``.
"""

from __future__ import annotations

from typing import Any

from vnode.plugin import NodePlan, hookimpl


@hookimpl(trylast=True)
def vnode_guest_network_files(node: NodePlan) -> dict[str, str]:
    return network_files(node)


def network_files(plan: NodePlan) -> dict[str, str]:
    """The NIC's configuration for the apply script: mode, address and gateway to set at once,
    the same in each network tool's own format, and the script that persists it for later
    boots in the stack the guest uses."""
    return {**_stack_files(plan), "persist": persist_script()}


def persist_script() -> str:
    from importlib.resources import files

    return files("vnode_plugins").joinpath("templates/guest-network-persist.sh").read_text()


def _stack_files(plan: NodePlan) -> dict[str, str]:
    address = plan.address
    mac = plan.mac
    nic: dict[str, Any] = {"match": {"macaddress": mac}}
    if address is None:
        nic["dhcp4"] = True
        return {
            "mode": "dhcp",
            "address": "",
            "gateway": "",
            "resolv.conf": "",
            "netplan.yaml": _netplan(nic),
            "nm.nmconnection": _nm(mac, "[ipv4]\nmethod=auto\n"),
            "networkd.network": f"[Match]\nMACAddress={mac}\n\n[Network]\nDHCP=ipv4\n",
            "ifupdown": "auto @NIC@\niface @NIC@ inet dhcp\n",
        }
    cidr = f"{address.ip}/{address.prefix}"
    gateway = address.gateway or ""
    nic["addresses"] = [cidr]
    if gateway:
        nic["routes"] = [{"to": "0.0.0.0/0", "via": gateway}]
    nic["nameservers"] = {"addresses": list(address.dns), "search": list(address.search)}
    resolv = "".join(f"nameserver {dns}\n" for dns in address.dns)
    if address.search:
        resolv += f"search {' '.join(address.search)}\n"
    ipv4 = f"[ipv4]\nmethod=manual\naddress1={cidr}{',' + gateway if gateway else ''}\n"
    if address.dns:
        ipv4 += f"dns={';'.join(address.dns)};\n"
    if address.search:
        ipv4 += f"dns-search={';'.join(address.search)};\n"
    networkd = f"[Match]\nMACAddress={mac}\n\n[Network]\nAddress={cidr}\n"
    networkd += f"Gateway={gateway}\n" if gateway else ""
    networkd += "".join(f"DNS={dns}\n" for dns in address.dns)
    networkd += f"Domains={' '.join(address.search)}\n" if address.search else ""
    ifupdown = f"auto @NIC@\niface @NIC@ inet static\n    address {cidr}\n"
    ifupdown += f"    gateway {gateway}\n" if gateway else ""
    return {
        "mode": "static",
        "address": cidr,
        "gateway": gateway,
        "resolv.conf": resolv,
        "netplan.yaml": _netplan(nic),
        "nm.nmconnection": _nm(mac, ipv4),
        "networkd.network": networkd,
        "ifupdown": ifupdown,
    }


def _netplan(nic: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump({"network": {"version": 2, "ethernets": {"vnode0": nic}}})


def _nm(mac: str, ipv4: str) -> str:
    return (
        "[connection]\nid=vnode0\ntype=ethernet\n\n"
        f"[ethernet]\nmac-address={mac}\n\n{ipv4}\n[ipv6]\nmethod=ignore\n"
    )
