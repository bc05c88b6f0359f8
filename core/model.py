"""The data that crosses plugin hooks; plugins build and read these, never libvirt objects."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class Distro:
    """What a distro plugin knows about one release's cloud image."""

    name: str  # canonical short name, e.g. "f43", "u24.04", "d12"
    family: str  # "fedora", "ubuntu", "debian", or a third party's own
    release: str
    title: str
    osinfo: str  # libosinfo id, e.g. "fedora43"
    image_url: str | None = None
    checksum_url: str | None = None
    # How to read checksum_url: "fedora-checksum", "sha256sums" or "sha512sums".
    checksum_format: str | None = None
    disk_gb: int = 10
    # Guest quirks that cloud-init network-config must respect.
    interface_name: str = "eth0"
    network_renderer: str = "auto"
    aliases: tuple[str, ...] = ()
    # A plugin that can build the image locally (no download) says so here.
    buildable: bool = False
    # The image's file in the image store; by default named after the distro. A plugin may
    # point at another distro's file to reuse its image.
    image_file: str | None = None

    @property
    def image_filename(self) -> str:
        return self.image_file or f"{self.name}.qcow2"


@attrs.frozen
class NodeIdentity:
    """Who a node is: what network plugins key reservations and addresses on."""

    name: str
    number: int
    pool: str
    mac: str


@attrs.frozen
class NodePlan(NodeIdentity):
    """Everything decided about one node before anything is created."""

    distro: Distro
    memory_mib: int
    vcpus: int
    disk_gb: int
    network: str  # "KIND[:ARG]", e.g. "libvirt", "bridge:br0", "direct:eth0"
    virt_type: str  # "kvm" or "qemu" (auto is resolved before planning ends)
    node_dir: Path

    @property
    def network_kind(self) -> str:
        return self.network.split(":", 1)[0]

    @property
    def network_arg(self) -> str | None:
        parts = self.network.split(":", 1)
        return parts[1] if len(parts) == 2 and parts[1] else None


@attrs.frozen
class StaticAddress:
    """An address the network knows before boot, given to the guest through network-config."""

    ip: str
    prefix: int
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


@attrs.frozen
class Interface:
    """How the node's NIC attaches: rendered into the domain XML by the core."""

    type: str  # libvirt interface type: "network", "bridge" or "direct"
    source: str  # network name, bridge name or parent device
    mode: str | None = None  # macvtap mode for "direct"
    model: str = "virtio"


@attrs.frozen
class ConsoleSetup:
    """Where the serial console is captured from boot on."""

    log_path: Path


@attrs.frozen
class NodeResult:
    """The outcome of ``up`` for one node, as printed by ``--json``."""

    name: str
    distro: str
    mac: str
    ip: str | None
    state: str  # "ready", "timeout", "failed" or "started" (with --no-wait)
    seconds: float | None
    detail: str | None = None

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class NodeInfo:
    """A node as ``vnode list`` shows it."""

    name: str
    distro: str
    state: str
    mac: str
    ip: str | None
    network: str
    created: str

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)
