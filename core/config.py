"""Configuration from TOML: defaults, then /etc, then the user's file, then VNODE_CONFIG."""

from __future__ import annotations

import functools
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from vnode.errors import UsageError
from vnode.hosts import Host, check_hosts
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
    # The lab's own cloud-config files (Jinja templates), merged into every node's user-data.
    cloud_config: list[Path] = attrs.field(factory=list, hash=False)
    # `up` clones nodes from warm templates (as --warm) unless --cold is given.
    warm: bool = False


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


_FAMILY = re.compile(r"[a-z][a-z0-9_-]*")


def _check_mirrors(instance: Any, attribute: attrs.Attribute, value: dict[str, str]) -> None:
    for family, url in value.items():
        if not _FAMILY.fullmatch(family):
            raise UsageError(f"config: [images] mirror.{family}: not a distro family name")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"config: [images] mirror.{family} = {url!r} is not an http(s) URL")


def _check_keyrings(instance: Any, attribute: attrs.Attribute, value: dict[str, str]) -> None:
    for family, path in value.items():
        if not _FAMILY.fullmatch(family):
            raise UsageError(f"config: [images] keyring.{family}: not a distro family name")
        if not isinstance(path, str) or not path.startswith("/"):
            raise UsageError(
                f"config: [images] keyring.{family} = {path!r} is not an absolute path"
            )


def _positive(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise UsageError(f"config: [images] {attribute.name} = {value} must be at least 1")


@attrs.frozen
class ImagesSettings:
    """Where ``vnode images fetch`` downloads from (per family, a mirror of upstream's layout)
    and how often the distro catalogs are refreshed from upstream's metadata."""

    mirror: dict[str, str] = attrs.field(factory=dict, validator=_check_mirrors, hash=False)
    # Refresh the catalogs by itself: when a name is unknown, or before fetching when the
    # cached catalog is older than catalog_max_age_days. False: only `vnode images refresh`.
    auto_refresh: bool = True
    catalog_max_age_days: int = attrs.field(default=7, validator=_positive)
    # family -> the OpenPGP public key file that signs its checksum files, instead of the
    # keys its plugin names (for a host without the distro's key package, or a private build).
    keyring: dict[str, str] = attrs.field(factory=dict, validator=_check_keyrings, hash=False)

    def mirror_for(self, family: str) -> str | None:
        return self.mirror.get(family)

    def keyring_for(self, family: str) -> str | None:
        return self.keyring.get(family)


@attrs.frozen
class PluginsSettings:
    """Which installed plugins vnode leaves out (by entry point name, see `vnode plugins list`)."""

    disable: list[str] = attrs.field(factory=list, hash=False)


@attrs.frozen
class Config:
    defaults: Defaults = Defaults()
    pools: tuple[Pool, ...] = (Pool(stem="vnode"),)
    # [[hosts]]: the hypervisors nodes are spread over; empty: one, at defaults.uri.
    hosts: tuple[Host, ...] = ()
    paths: Paths = Paths()
    ssh: SSHSettings = SSHSettings()
    images: ImagesSettings = ImagesSettings()
    plugins: PluginsSettings = PluginsSettings()
    # Plugin-declared sections ([site], [libvirt_network], a third party's own), structured
    # into each plugin's attrs class; defaults where the files say nothing.
    sections: dict[str, Any] = attrs.field(factory=dict, hash=False)
    sources: tuple[Path, ...] = ()


CORE_SECTIONS: dict[str, type] = {
    "defaults": Defaults,
    "paths": Paths,
    "ssh": SSHSettings,
    "images": ImagesSettings,
    "plugins": PluginsSettings,
}


@attrs.frozen
class RawConfig:
    """The merged TOML, before plugins say which sections exist, and where each key came from."""

    data: dict[str, Any]
    origins: dict[str, Path]  # "section" or "section.key" -> the file that set it last
    sources: tuple[Path, ...]

    def disabled_plugins(self) -> list[str]:
        return structure_section(
            "plugins", PluginsSettings, self.data.get("plugins", {}), self
        ).disable


def config_files() -> list[Path]:
    """The files read, lowest precedence first."""
    files = [SYSTEM_CONFIG, USER_CONFIG.expanduser()]
    if explicit := os.environ.get("VNODE_CONFIG"):
        files.append(Path(explicit))
    return files


def _exists(path: Path) -> bool:
    # A user whose HOME is not theirs (sudo -u, setpriv) cannot even stat ~/.config: for
    # them that file does not exist, it is not an error.
    try:
        return path.exists()
    except PermissionError:
        return False


def read_config(files: list[Path] | None = None) -> RawConfig:
    """Merge the config files; a missing VNODE_CONFIG or broken TOML is a UsageError."""
    merged: dict[str, Any] = {}
    origins: dict[str, Path] = {}
    read: list[Path] = []
    explicit = os.environ.get("VNODE_CONFIG")
    for path in config_files() if files is None else files:
        if not _exists(path):
            if explicit and path == Path(explicit):
                raise UsageError(f"config file {path} (VNODE_CONFIG) does not exist")
            continue
        data = _read_toml(path)
        for section, values in data.items():
            origins[section] = path
            if isinstance(values, dict):
                origins.update({f"{section}.{key}": path for key in values})
        _merge(merged, data)
        read.append(path)
    return RawConfig(data=merged, origins=origins, sources=tuple(read))


def build_config(data: dict[str, Any], plugin_sections: dict[str, type] | None = None) -> Config:
    """A Config from already-parsed TOML data (tests, the library)."""
    return build_config_from(RawConfig(data=data, origins={}, sources=()), plugin_sections or {})


def build_config_from(raw: RawConfig, plugin_sections: dict[str, type] | None) -> Config:
    """The checked Config; ``plugin_sections`` None leaves the sections that are no core's
    unchecked and out of the Config, for :func:`check_plugin_sections` once plugins load."""
    data = raw.data
    kwargs: dict[str, Any] = {"sources": raw.sources}
    if plugin_sections is not None:
        kwargs["sections"] = check_plugin_sections(raw, plugin_sections)
    for section, cls in CORE_SECTIONS.items():
        if section in data:
            kwargs[section] = structure_section(section, cls, data[section], raw)
    if "pools" in data:
        if not isinstance(data["pools"], list) or not data["pools"]:
            raise UsageError("config: pools must be a non-empty array of tables ([[pools]])")
        kwargs["pools"] = tuple(
            structure_section("pools", Pool, entry, raw) for entry in data["pools"]
        )
        check_disjoint(kwargs["pools"])
    if "hosts" in data:
        if not isinstance(data["hosts"], list) or not data["hosts"]:
            raise UsageError("config: hosts must be a non-empty array of tables ([[hosts]])")
        kwargs["hosts"] = tuple(
            structure_section("hosts", Host, entry, raw) for entry in data["hosts"]
        )
        check_hosts(kwargs["hosts"])
        names = {host.name for host in kwargs["hosts"]}
        for pool in kwargs.get("pools", ()):
            if unknown := set(pool.hosts) - names:
                raise UsageError(
                    f"config: pool {pool.stem} is bound to unknown host(s) "
                    f"{', '.join(sorted(unknown))}"
                )
    return Config(**kwargs)


def check_plugin_sections(raw: RawConfig, plugin_sections: dict[str, type]) -> dict[str, Any]:
    """The plugins' sections, structured; a section no plugin (nor the core) declares is bad
    input."""
    clash = set(plugin_sections) & {*CORE_SECTIONS, "pools", "hosts"}
    if clash:
        raise UsageError(f"a plugin declares core config section(s): {', '.join(sorted(clash))}")
    unknown = set(raw.data) - {*CORE_SECTIONS, *plugin_sections, "pools", "hosts"}
    if unknown:
        first = sorted(unknown)[0]
        raise UsageError(
            f"unknown config section(s): {', '.join(sorted(unknown))}{_where(raw, first)}"
        )
    return {
        section: structure_section(section, cls, raw.data.get(section, {}), raw)
        for section, cls in plugin_sections.items()
    }


def structure_section(section: str, cls: type, values: Any, raw: RawConfig) -> Any:
    """One table into its attrs class: unknown keys and wrong types are one-line UsageErrors
    naming the file, the section and the key."""
    if not isinstance(values, dict):
        raise UsageError(f"config: [{section}] must be a table{_where(raw, section)}")
    if not values:  # nothing to check: cattrs (and its import) is not needed
        try:
            return cls()
        except (TypeError, ValueError) as exc:
            raise UsageError(f"config: [{section}] needs values: {exc}") from None
    fields = {f.name: f for f in attrs.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UsageError(
            f"config: unknown key(s) in [{section}]: {', '.join(unknown)}"
            f"{_where(raw, f'{section}.{unknown[0]}')}"
        )
    import cattrs

    try:
        return _converter().structure(values, cls)
    except UsageError:
        raise
    except cattrs.ClassValidationError as exc:
        if own := _usage_error_in(exc):  # a validator's own words say it best
            words = str(own).removeprefix("config: ")
            raise UsageError(f"config: {words}{_where(raw, section)}") from None
        key, problem = _first_problem(exc)
        if key == "?":  # a validator of the class refused the value
            raise UsageError(
                f"config: bad value in [{section}]: {problem}{_where(raw, section)}"
            ) from None
        value = values.get(key)
        raise UsageError(
            f"config: [{section}] {key} = {value!r} has the wrong type: {problem}"
            f"{_where(raw, f'{section}.{key}')}"
        ) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"config: bad value in [{section}]: {exc}{_where(raw, section)}") from None


def _usage_error_in(exc: BaseException) -> UsageError | None:
    if isinstance(exc, UsageError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        if found := _usage_error_in(inner):
            return found
    return None


def _first_problem(exc: Any) -> tuple[str, str]:
    import cattrs

    for line in cattrs.transform_error(exc, path=""):
        problem, _, path = line.rpartition(" @ ")
        key = path.lstrip(".").split(".")[0].split("[")[0]
        if key:
            return key, problem
    leaf: BaseException = exc
    while getattr(leaf, "exceptions", None):
        leaf = leaf.exceptions[0]  # type: ignore[attr-defined]
    words = leaf.args[0] if leaf.args and isinstance(leaf.args[0], str) else str(leaf)
    return "?", words


def _where(raw: RawConfig, key: str) -> str:
    origin = raw.origins.get(key) or raw.origins.get(key.split(".")[0])
    return f" (in {origin})" if origin else ""


@functools.cache
def _converter() -> Any:
    """cattrs, strict: TOML already has types, so a string where a number goes is an error,
    not something to convert."""
    import cattrs

    converter = cattrs.Converter(forbid_extra_keys=True)

    def exactly(kind: type) -> Any:
        def structure(value: Any, _: type) -> Any:
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
                raise TypeError(
                    f"expected {kind.__name__ if isinstance(kind, type) else 'a number'}"
                )
            return value

        return structure

    converter.register_structure_hook(int, exactly(int))
    converter.register_structure_hook(str, exactly(str))
    converter.register_structure_hook(bool, exactly(bool))
    converter.register_structure_hook(float, lambda v, _: float(exactly((int, float))(v, float)))

    def strict_list(value: Any, kind: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError("expected an array")
        (item,) = typing.get_args(kind) or (Any,)
        return [converter.structure(v, item) for v in value]

    converter.register_structure_hook_func(lambda t: typing.get_origin(t) is list, strict_list)
    converter.register_structure_hook(Path, lambda v, _: Path(exactly(str)(v, str)))
    return converter


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
