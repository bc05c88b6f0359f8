"""The data that crosses plugin hooks; plugins build and read these, never libvirt objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from vnode.hosts import LOCAL

VirtType = Literal["kvm", "qemu"]
NodeState = Literal["ready", "timeout", "failed", "started"]
VerdictStatus = Literal["ok", "warn", "fail"]


@attrs.frozen
class Location:
    """Another place the same image and checksum file may be (e.g. Fedora's archive)."""

    image_url: str
    checksum_url: str


# A distro's name and image file become a path in the image store: one file name, no "/",
# not starting with "." (no "..", no hidden file), whatever a plugin or a cached catalog says.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def _file_name(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not _FILE_NAME.fullmatch(value):
        raise ValueError(f"distro {attribute.name} {value!r} cannot name a file in the store")


@attrs.frozen
class Distro:
    """What a distro plugin knows about one release's cloud image."""

    name: str = attrs.field(validator=_file_name)  # canonical short name: "f43", "u24.04"
    family: str  # "fedora", "ubuntu", "debian", or a third party's own
    release: str
    title: str
    osinfo: str  # libosinfo OS id, written into the domain: "http://fedoraproject.org/fedora/44"
    image_url: str | None = None
    image_format: str = "qcow2"  # as published: "qcow2" or "raw" (fetch converts raw)
    checksum_url: str | None = None
    # How to read checksum_url: "fedora-checksum", "sha256sums" or "sha512sums".
    checksum_format: str | None = None
    # The smallest disk the image needs, in GiB: a node gets at least this much.
    disk_gb: int = 10
    aliases: tuple[str, ...] = ()
    # The image's file in the image store; by default named after the distro. A plugin may
    # point at another distro's file to reuse its image.
    image_file: str | None = attrs.field(default=None, validator=_file_name)
    # Where to look when image_url/checksum_url answer 404 (a release moved to the archive,
    # or not yet): tried in order; the place that worked is remembered.
    alternates: tuple[Location, ...] = ()
    # The image's sha256 as upstream's release metadata states it, if it does: the checksum
    # file must agree, or the fetch stops (metadata and checksum file tell two stories).
    sha256: str | None = None
    end_of_life: bool = False
    # How upstream signs the checksum file: "clearsigned" (a cleartext signature inside it,
    # as Fedora's CHECKSUM), a suffix naming a detached signature next to it (".gpg" for
    # Ubuntu's SHA256SUMS.gpg), or None when upstream signs nothing. See vnode.signatures.
    signature: str | None = attrs.field(default=None)
    # Public key files that vouch for the signature: ones a host package installs, or ones
    # shipped with the plugin; those absent on the host are skipped. Every key in them is
    # trusted unless ``signers`` names primary key fingerprints (a pin within a keyring).
    keyrings: tuple[str, ...] = ()
    signers: tuple[str, ...] = attrs.field(default=())

    @signers.validator
    def _check_signers(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        for fingerprint in value:
            # A whole fingerprint (40 or 64 hex digits, spaces allowed), never a short key id.
            if not re.fullmatch(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}", "".join(fingerprint.split())):
                raise ValueError(f"{self.name}: signer {fingerprint!r} is not a key fingerprint")

    @signature.validator
    def _check_signature(self, attribute: attrs.Attribute, value: str | None) -> None:
        if value is not None and not re.fullmatch(r"clearsigned|\.[A-Za-z0-9]+", value):
            raise ValueError(f"{self.name}: signature {value!r} is not 'clearsigned' or '.SUFFIX'")

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
    # Which of the node's NICs this identity stands for: 0 is the node's own (its name, its
    # pool's MAC); a backend asked about NIC 1, 2, ... gets that NIC's MAC in ``mac``.
    nic: int = attrs.field(default=0, kw_only=True)


@attrs.frozen
class StaticAddress:
    """An address the network knows before boot, given to the guest through network-config."""

    ip: str
    prefix: int
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    # Dual-stack: the node's IPv6 address on the same NIC (no IPv6 gateway: on-link only).
    ip6: str | None = None
    prefix6: int = 64


InterfaceType = Literal["network", "bridge", "direct", "user", "ethernet", "vhostuser"]
INTERFACE_TYPES: tuple[str, ...] = InterfaceType.__args__  # type: ignore[attr-defined]


@attrs.frozen
class Interface:
    """How the node's NIC attaches, as libvirt's ``<interface type=...>`` says it.

    ``source`` holds the attributes of ``<source>`` (e.g. ``{"network": "vnode"}``,
    ``{"bridge": "br0"}``, ``{"dev": "eth0", "mode": "bridge"}``), so any libvirt interface
    type can be described; a type libvirt does not have is refused when the plan is made.
    """

    type: str = attrs.field(validator=attrs.validators.in_(INTERFACE_TYPES))
    source: dict[str, str] = attrs.field(factory=dict, hash=False)
    model: str = "virtio"


@attrs.frozen
class Nic:
    """A node's further NIC (NIC 1, 2, ...; the first is the NodePlan's own ``mac``,
    ``network``, ``interface`` and ``address``), as its network's backend planned it."""

    network: str  # "KIND[:ARG]" as the backend describes it
    mac: str
    interface: Interface
    address: StaticAddress | None = None


@attrs.frozen
class ConsoleSetup:
    """Where the serial console is captured from boot on (virtlogd writes the file)."""

    log_path: Path


@attrs.frozen
class NodePlan(NodeIdentity):
    """Everything decided about one node before anything is created.

    The executor works from this alone: it calls no plugin.
    """

    distro: Distro
    memory_mib: int
    vcpus: int
    disk_gb: int
    network: str  # "KIND[:ARG]" as the network plugin describes it, e.g. "bridge:br0"
    virt_type: VirtType
    node_dir: Path
    host: str = LOCAL  # the hypervisor host's name (see [[hosts]])
    # The host's vnode storage pool directory: disk, seed and console are volumes there
    # (made through libvirt's storage API); None: files in node_dir, made locally.
    volume_dir: Path | None = None
    interface: Interface | None = None
    address: StaticAddress | None = None  # known before boot; None: learned while waiting
    dns_domain: str | None = None  # the node's FQDN is NAME.DOMAIN when set
    console: ConsoleSetup | None = None
    domain_xml: str = ""  # the domain as it will be defined, plugins' adjustments applied
    # The lab's own cloud-config for this node (rendered, merged YAML; "" for none) and the
    # vnode keys the user chose to override; merged into vnode's user-data at creation.
    user_cloud_config: str = ""
    cloud_config_overrides: tuple[str, ...] = ()
    # A warm clone's network files, {name: text}, as a plugin wrote them while planning
    # (vnode_guest_network_files); empty for a node booted cold.
    guest_network_files: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    # Extra disks (GiB), empty and unformatted: vdb, vdc, ... in the guest, before the seed,
    # each with the serial ``vnode-dataN`` (so /dev/disk/by-id/virtio-vnode-dataN names it).
    extra_disks: tuple[int, ...] = ()
    # The lab file that made the node (its [lab] name), recorded in the domain's metadata.
    lab: str = ""
    # The sha256 of the image the node boots from, as its store record says ("" when it is
    # fetched by this command): a lab's lock pins it.
    image_sha256: str = ""
    # A TPM 2.0, emulated by swtpm through libvirt (its state removed with the domain).
    tpm: bool = False
    # The node's further NICs, in order (the guest names them vnode1, vnode2, ...), and every
    # NIC's network as it was asked for (first the node's own), recorded in its shape.
    nics: tuple[Nic, ...] = ()
    networks: tuple[str, ...] = ()

    @property
    def macs(self) -> tuple[str, ...]:
        return (self.mac, *(nic.mac for nic in self.nics))

    # "bios", "uefi" or "uefi-secure" (vnode.firmware); UEFI nodes have their own NVRAM.
    firmware: str = "bios"
    # The domain's maxima, up to which `vnode apply` grows memory and vCPUs in place; 0: the
    # node's own size (no headroom). Memory above the current size is a virtio balloon's.
    max_memory: int = 0
    max_vcpus: int = 0

    @property
    def max_memory_mib(self) -> int:
        return max(self.max_memory, self.memory_mib)

    @property
    def max_vcpu_count(self) -> int:
        return max(self.max_vcpus, self.vcpus)

    @property
    def extra_disk_paths(self) -> tuple[Path, ...]:
        if self.volume_dir is not None:
            return tuple(self.volume_dir / volume for volume in self.extra_disk_volumes)
        return tuple(self.node_dir / f"data{i}.qcow2" for i in range(1, len(self.extra_disks) + 1))

    @property
    def extra_disk_volumes(self) -> tuple[str, ...]:
        return tuple(extra_disk_volume(self.name, i) for i in range(1, len(self.extra_disks) + 1))

    @property
    def seed_target(self) -> str:
        """The seed's device, after the root disk and the extra disks."""
        return "vd" + chr(ord("b") + len(self.extra_disks))

    @property
    def disk_path(self) -> Path:
        if self.volume_dir is not None:
            return self.volume_dir / self.disk_volume
        return self.node_dir / "disk.qcow2"

    @property
    def seed_path(self) -> Path:
        if self.volume_dir is not None:
            return self.volume_dir / self.seed_volume
        return self.node_dir / "seed.iso"

    @property
    def nvram_path(self) -> Path:
        """The node's UEFI variable store: libvirt copies the firmware's template there when
        the domain first starts (mode 0600) and removes it with the domain."""
        if self.volume_dir is not None:
            return self.volume_dir / self.nvram_volume
        return self.node_dir / "nvram.fd"

    @property
    def nvram_volume(self) -> str:
        return nvram_volume(self.name)

    @property
    def disk_volume(self) -> str:
        return f"{self.name}-disk.qcow2"

    @property
    def seed_volume(self) -> str:
        return f"{self.name}-seed.iso"

    @property
    def console_volume(self) -> str:
        return f"{self.name}-console.log"


def nvram_volume(node: str) -> str:
    """The volume name of a node's UEFI NVRAM in a host's pool."""
    return f"{node}-nvram.fd"


def extra_disk_volume(node: str, index: int) -> str:
    """The volume name of a node's ``index``-th extra disk (from 1) in a host's pool."""
    return f"{node}-data{index}.qcow2"


@attrs.frozen
class NodeResult:
    """The outcome of ``up`` for one node, as printed by ``--json``."""

    name: str
    distro: str
    mac: str
    ip: str | None
    state: NodeState
    seconds: float | None
    detail: str | None = None
    # --run/--script: the exit status of the first step that failed, 0 if all passed, None if
    # nothing ran; output is the steps' combined output (its last 64 KiB).
    exit_status: int | None = None
    output: str | None = None
    # "warm" (made from a template, see `up --warm`) or "cold" (booted); None: not made here.
    boot: str | None = None

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
    host: str = LOCAL
    # The shape vnode made it in (None: made before vnode recorded shapes): memory_mib,
    # vcpus, disk_gb, extra_disks, image_sha256, lab.
    shape: dict[str, object] | None = None
    damage: str | None = None  # what is wrong with the domain's vnode mark (state "damaged")

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class Verdict:
    """One line of ``vnode doctor``: a check's name, ok/warn/fail, and one sentence."""

    check: str
    status: VerdictStatus
    message: str

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


@attrs.frozen
class ImageBuilder:
    """A plugin's offer to build a distro's image locally (see ``vnode_image_builder``)."""

    how: str  # one phrase for listings, e.g. "built from the Debian mirror with mmdebstrap"
    build: Callable[[Path], None] = attrs.field(eq=False)  # writes a qcow2 at the path given
    # What the builder makes, recorded with the image: `vnode images build` rebuilds an image
    # it built with another version (bump it when nodes would notice the difference).
    version: str = ""


@attrs.frozen
class PluginContext:
    """What a plugin sees of vnode's configuration and host, handed to its hooks.

    ``sections`` holds every plugin-declared config section, structured into the plugin's
    own attrs class (defaults where the user wrote nothing).
    """

    sections: Mapping[str, Any] = attrs.field(hash=False)
    pools: tuple[Any, ...]  # vnode.pools.Pool: name, number, MAC of every node name
    state_dir: Path
    uri: str
    mirrors: Mapping[str, str] = attrs.field(factory=dict, hash=False)  # family -> URL
    connection: Any = attrs.field(default=None, eq=False, repr=False)  # libvirt, or None
    # With [[hosts]]: which host this context is for, its place in the config (0, 1, ...) and
    # the subnet configured for its own network, if any. A network plugin that creates a
    # network per host keeps hosts' subnets disjoint with these.
    host: str = LOCAL
    host_index: int = 0
    host_subnet: str | None = None

    def section(self, name: str) -> Any:
        return self.sections[name]
