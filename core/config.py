"""Configuration from TOML: defaults, then /etc, then the user's file, then VNODE_CONFIG."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from vnode.errors import UsageError
from vnode.pools import Pool, check_disjoint

SYSTEM_CONFIG = Path("/etc/vnode/config.toml")
USER_CONFIG = Path("~/.config/vnode/config.toml")
VIRT_TYPES = ("auto", "kvm", "qemu")

_positive = attrs.validators.gt(0)


@attrs.frozen
class Defaults:
    """What a node gets unless the command line says otherwise."""

    distro: str = "fedora"
    memory: int = attrs.field(default=1024, validator=[_positive, attrs.validators.le(1024 * 1024)])
    vcpus: int = attrs.field(default=1, validator=[_positive, attrs.validators.le(512)])
    disk: int = attrs.field(default=10, validator=[_positive, attrs.validators.le(64 * 1024)])
    timeout: float = attrs.field(default=120.0, validator=[_positive, attrs.validators.le(86400)])
    virt_type: str = attrs.field(default="auto", validator=attrs.validators.in_(VIRT_TYPES))
    network: str = "libvirt"
    uri: str = "qemu:///system"


@attrs.frozen
class Paths:
    """Where vnode keeps images and node disks; the qemu user must be able to read them."""

    state: Path = attrs.field(default=Path("/var/lib/vnode"), converter=Path)
    # Images can be shared between several state directories (e.g. tests and the real one).
    image_store: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))

    @property
    def images(self) -> Path:
        return self.image_store or self.state / "images"

    @property
    def nodes(self) -> Path:
        return self.state / "nodes"

    @property
    def ssh(self) -> Path:
        return self.state / "ssh"

    @property
    def locks(self) -> Path:
        return self.state / "locks"


@attrs.frozen
class SSHSettings:
    """The client key put into root's authorized_keys; vnode generates one if none is set."""

    key: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))


def _check_subnet(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise UsageError(
            f"libvirt_network.subnet {value!r} is not an IPv4 network: {exc}"
        ) from None
    if net.num_addresses < 16:
        raise UsageError(f"libvirt_network.subnet {value!r} is too small")


@attrs.frozen
class LibvirtNetworkSettings:
    """vnode's own libvirt network, created on first use."""

    name: str = attrs.field(
        default="vnode", validator=attrs.validators.matches_re(r"^[A-Za-z0-9_.-]+$")
    )
    subnet: str = attrs.field(default="192.168.150.0/24", validator=_check_subnet)
    # "nat" gives nodes the outside world through the host; "none" keeps the network isolated.
    forward: str = attrs.field(default="nat", validator=attrs.validators.in_(("nat", "none")))
    domain: str = attrs.field(
        default="vnode", validator=attrs.validators.matches_re(r"^[a-z0-9.-]+$")
    )


def _check_dns_server(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise UsageError(f"site.dns {value!r} is not an IP address") from None


_DNS_DOMAIN = r"^$|^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


@attrs.frozen
class SiteSettings:
    """The site's network that bridge and direct nodes join: whose DNS knows their names."""

    # The host's resolver may not know the site's names (a lab DNS on the bridge); empty means
    # ask the host's resolver.
    dns: str = attrs.field(default="", validator=_check_dns_server)
    dns_port: int = attrs.field(
        default=53, validator=[attrs.validators.ge(1), attrs.validators.le(65535)]
    )
    # Names are looked up as NAME.DOMAIN when set, else as NAME.
    domain: str = attrs.field(default="", validator=attrs.validators.matches_re(_DNS_DOMAIN))


_FAMILY = re.compile(r"[a-z][a-z0-9_-]*")


def _mirrors(value: Any) -> tuple[tuple[str, str], ...]:
    """``mirror.FAMILY = URL`` pairs, checked; a tuple keeps the frozen config hashable."""
    if isinstance(value, tuple):
        return value
    if not isinstance(value, dict):
        raise UsageError("config: [images] mirror must be a table: mirror.FAMILY = URL")
    pairs = []
    for family, url in sorted(value.items()):
        if not _FAMILY.fullmatch(family):
            raise UsageError(f"config: [images] mirror.{family}: not a distro family name")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"config: [images] mirror.{family} = {url!r} is not an http(s) URL")
        pairs.append((family, url))
    return tuple(pairs)


@attrs.frozen
class ImagesSettings:
    """Where ``vnode images fetch`` downloads from: per family, a mirror of upstream's layout."""

    mirror: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_mirrors)

    def mirror_for(self, family: str) -> str | None:
        return dict(self.mirror).get(family)


@attrs.frozen
class Config:
    defaults: Defaults = Defaults()
    pools: tuple[Pool, ...] = (Pool(stem="vnode"),)
    paths: Paths = Paths()
    ssh: SSHSettings = SSHSettings()
    libvirt_network: LibvirtNetworkSettings = LibvirtNetworkSettings()
    site: SiteSettings = SiteSettings()
    images: ImagesSettings = ImagesSettings()
    sources: tuple[Path, ...] = ()


_SECTIONS: dict[str, type] = {
    "defaults": Defaults,
    "paths": Paths,
    "ssh": SSHSettings,
    "libvirt_network": LibvirtNetworkSettings,
    "site": SiteSettings,
    "images": ImagesSettings,
}


def config_files() -> list[Path]:
    """The files read, lowest precedence first."""
    files = [SYSTEM_CONFIG, USER_CONFIG.expanduser()]
    if explicit := os.environ.get("VNODE_CONFIG"):
        files.append(Path(explicit))
    return files


def load_config(files: list[Path] | None = None) -> Config:
    """Merge the config files; a missing VNODE_CONFIG, unknown key or bad value is a UsageError."""
    merged: dict[str, Any] = {}
    read: list[Path] = []
    explicit = os.environ.get("VNODE_CONFIG")
    for path in config_files() if files is None else files:
        if not path.exists():
            if explicit and path == Path(explicit):
                raise UsageError(f"config file {path} (VNODE_CONFIG) does not exist")
            continue
        _merge(merged, _read_toml(path))
        read.append(path)
    return build_config(merged, tuple(read))


def build_config(data: dict[str, Any], sources: tuple[Path, ...] = ()) -> Config:
    unknown = set(data) - {*_SECTIONS, "pools"}
    if unknown:
        raise UsageError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {"sources": sources}
    for section, cls in _SECTIONS.items():
        if section in data:
            kwargs[section] = _build(cls, section, data[section])
    if "pools" in data:
        if not isinstance(data["pools"], list) or not data["pools"]:
            raise UsageError("config: pools must be a non-empty array of tables ([[pools]])")
        kwargs["pools"] = tuple(_build(Pool, "pools", entry) for entry in data["pools"])
        check_disjoint(kwargs["pools"])
    return Config(**kwargs)


def _build(cls: type, section: str, values: Any) -> Any:
    if not isinstance(values, dict):
        raise UsageError(f"config: [{section}] must be a table")
    fields = {f.name: f for f in attrs.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise UsageError(f"config: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")
    for key, value in values.items():
        _check_type(section, key, value, fields[key])
    try:
        return cls(**values)
    except UsageError:
        raise
    except (TypeError, ValueError) as exc:
        raise UsageError(f"config: bad value in [{section}]: {exc}") from None


def _check_type(section: str, key: str, value: Any, field: attrs.Attribute) -> None:
    expected = {"int": int, "float": (int, float), "str": str}.get(str(field.type))
    if "Path" in str(field.type):
        expected = str
    if expected is not None and (isinstance(value, bool) or not isinstance(value, expected)):
        raise UsageError(f"config: [{section}] {key} = {value!r} has the wrong type")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"config file {path} cannot be read: {exc.strerror}") from None


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    # Tables merge key by key; arrays such as pools replace what came before.
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
