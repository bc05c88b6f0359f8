"""The hooks plugins implement: this file is their contract.

Plugins import :data:`hookimpl` from :mod:`vnode.plugin` and implement any of the functions
below by name. vnode calls every hook through one :class:`vnode.plugins.PluginHost`, which
isolates plugins from each other: an implementation that raises, or answers with the wrong
type, is skipped and named (in ``vnode plugins list`` and a warning), and the next plugin
answers as if it had not been there. ``wrapper=True`` implementations work as pluggy defines
them; an exception from a wrapper is treated like one from the plugin's own answer.

Order: for "first result" hooks the first non-None answer wins. pluggy calls plugins
registered later first, ``tryfirst`` ones before the rest and ``trylast`` ones after; every
built-in implementation is ``trylast``, so a third party answering the same question (a site's
own Fedora mirror, its own network kind) wins over vnode's own.

Threads: every hook is called in the command's main thread, during planning or from ``vnode
doctor``/``plugins list``, never while nodes are being made; the executor calls no hook. The
objects some hooks return (a :class:`~vnode.network.NetworkBackend`, an image builder) are
called later, as their own documentation says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from vnode.catalog import Catalog, MetadataReader
    from vnode.model import (
        ConsoleSetup,
        Distro,
        ImageBuilder,
        NodePlan,
        PluginContext,
        Verdict,
    )
    from vnode.network import NetworkBackend

PROJECT = "vnode"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@attrs.frozen
class Hook:
    """What the plugin host knows of one hook besides its signature and docstring (below)."""

    kind: str  # what ``vnode plugins list`` calls a plugin that implements it
    # Whether a non-None answer is of the right type; anything else is skipped and named.
    accepts: Callable[[Any], bool] = attrs.field(eq=False)
    # Its answers name what a plugin provides: checked when the plugin loads (a wrong
    # answer makes the plugin broken).
    listing: bool = False


# Every hook, by name: the table the plugin host is driven from.
HOOKS: dict[str, Hook] = {}


def _spec(
    kind: str, accepts: Callable[[Any], bool], *, firstresult: bool = False, listing: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def declare(function: Callable[..., Any]) -> Callable[..., Any]:
        HOOKS[function.__name__] = Hook(kind, accepts, listing)
        return hookspec(firstresult=firstresult)(function)

    return declare


def _instance(name: str) -> Callable[[Any], bool]:
    """isinstance against a class of vnode's model, imported when first asked (hookspecs is
    imported by everything; the model's classes need not be loaded for that)."""
    return lambda answer: isinstance(answer, _class(name))


def _list_of(name: str) -> Callable[[Any], bool]:
    return lambda answer: (
        isinstance(answer, list) and all(isinstance(item, _class(name)) for item in answer)
    )


def _class(name: str) -> type:
    import builtins

    from vnode import catalog, model, network

    for module in (builtins, model, catalog, network):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(name)


def _sections(answer: Any) -> bool:
    return isinstance(answer, dict) and all(
        isinstance(name, str) and isinstance(cls, type) and attrs.has(cls)
        for name, cls in answer.items()
    )


def _cli_apps(answer: Any) -> bool:
    import cyclopts

    return isinstance(answer, list) and all(isinstance(a, cyclopts.App) for a in answer)


def _text_files(answer: Any) -> bool:
    return isinstance(answer, dict) and all(
        isinstance(name, str) and isinstance(text, str) for name, text in answer.items()
    )


def _network_name(answer: Any) -> bool:
    return isinstance(answer, str) and ":" in answer


def _nothing(answer: Any) -> bool:
    return False  # the hook answers nothing: it edits what it is given


@_spec("distro", _instance("Distro"), firstresult=True)
def vnode_distro_resolve(name: str, catalogs: Mapping[str, Catalog]) -> Distro | None:
    """Say which release a short name means.

    :param name: what the user typed, lower-cased: ``f44``, ``fedora``, ``u24.04``, ``noble``.
    :param catalogs: the last good catalogs plugins learned from upstream
        (:func:`vnode_catalog_refresh`), by family, as cached in vnode's state; a plugin with
        one here answers from it, else from its built-in table. Plugins that keep no catalog
        may leave the parameter out of their signature (pluggy passes only what they name).
    :return: the :class:`~vnode.model.Distro`, or None if this plugin does not know the name.

    First result: stops at the first non-None answer. Called once per distinct name during
    planning (``up``), and by ``images`` commands and ``plugins list``.
    """


@_spec("distro", _list_of("str"), listing=True)
def vnode_distro_names(catalogs: Mapping[str, Catalog]) -> list[str]:
    """List the names this plugin resolves (families and releases), for listings and errors.

    :param catalogs: as for :func:`vnode_distro_resolve`.
    :return: a list of str; every plugin's lists are joined.

    All results. Called by listings and in the message for an unknown name.
    """


@_spec("distro", _list_of("Catalog"))
def vnode_distro_catalogs(catalogs: Mapping[str, Catalog]) -> list[Catalog]:
    """Show the families this plugin answers for, as tables (``vnode images list``).

    :param catalogs: as for :func:`vnode_distro_resolve`.
    :return: the :class:`~vnode.catalog.Catalog` of each family the plugin resolves (the
        cached one where there is one, else the built-in one); every plugin's are joined.

    All results. Called by ``vnode images list`` and ``images show``.
    """


@_spec("distro", _instance("Catalog"))
def vnode_catalog_refresh(read: MetadataReader) -> Catalog | None:
    """Learn a family's releases from what upstream publishes for machines.

    :param read: a :class:`~vnode.catalog.MetadataReader`: ``read.json(family, url)`` /
        ``read.text(family, url)`` fetch upstream's URL (on the user's mirror when one is
        configured) with a short timeout, and raise ``CatalogError`` on failure.
    :return: the family's :class:`~vnode.catalog.Catalog` (``origin`` = the metadata URL),
        or None if this plugin does not follow upstream. Never a pre-release as ``latest``.
        Raise ``CatalogError`` (or any error) when the metadata is missing or makes no
        sense: the cached catalog is then kept, and the error reported.

    All results. Called by ``vnode images refresh``, and before resolving when the cache is
    older than ``[images] catalog_max_age_days`` or a name is unknown (unless ``[images]
    auto_refresh = false``); in the main thread, one plugin after the other.
    """


@_spec("distro", _instance("ImageBuilder"), firstresult=True)
def vnode_image_builder(distro: Distro, context: PluginContext) -> ImageBuilder | None:
    """Offer to build ``distro``'s image locally instead of downloading it.

    :param distro: a Distro some plugin resolved.
    :param context: the plugin's view of the configuration (its own sections, paths, mirrors).
    :return: an :class:`~vnode.model.ImageBuilder` (whose ``build(dest)`` is called later,
        in the main thread, by ``vnode images build``), or None if this plugin cannot build it.

    First result. Called by ``images build`` and ``images list`` (to say how to get an image).
    """


@_spec("network", _list_of("str"), listing=True)
def vnode_network_kinds() -> list[str]:
    """List the network kinds this plugin attaches nodes to (``libvirt``, ``bridge``, ...).

    :return: a list of str; every plugin's lists are joined. ``--network KIND[:ARG]`` picks one.

    All results. Called when plugins load and when a ``--network`` value is interpreted.
    """


@_spec("network", _network_name, firstresult=True)
def vnode_network_bare_name(name: str) -> str | None:
    """Say which network a bare ``--network NAME`` (or ``[defaults] network``) means, when
    NAME is neither ``KIND:ARG`` nor a network kind.

    :param name: what the user wrote, e.g. ``lab``.
    :return: the network as ``KIND:ARG`` (the libvirt-network plugin: ``libvirt:lab``, a
        libvirt network of that name), or None if this plugin gives bare names no meaning.

    First result. Called during planning and by ``vnode doctor``, in the main thread.
    """


@_spec("network", _instance("NetworkBackend"), firstresult=True)
def vnode_network_backend(
    kind: str, arg: str | None, context: PluginContext
) -> NetworkBackend | None:
    """Give the backend that attaches nodes to network ``KIND[:ARG]``.

    :param kind: the network kind, e.g. ``bridge``.
    :param arg: what followed the colon (``br0``), or None.
    :param context: the plugin's view of the configuration, and a libvirt connection.
    :return: a :class:`~vnode.network.NetworkBackend`, or None if ``kind`` is not this plugin's.

    First result. Called once per command that needs the network (``up``, ``destroy``,
    ``doctor``), in the main thread; see NetworkBackend for when its methods run.
    """


@_spec("guest", _text_files, firstresult=True)
def vnode_guest_network_files(node: NodePlan) -> dict[str, str] | None:
    """Write the network configuration a warm clone installs (a clone runs no cloud-init):
    its NIC comes up with the node's address at once, and keeps it on later boots.

    :param node: the node's plan: its MAC, and its static address (None: DHCP).
    :return: ``{name: text}``, the files of the clone's ``net/`` directory: ``mode``
        (``static`` or ``dhcp``), ``address`` (CIDR or empty) and ``gateway``, which vnode's
        apply script sets at once with iproute2 before it starts sshd; and ``persist``, a
        POSIX sh script it then runs as ``sh persist DIR NIC`` (DIR: these files; NIC: the
        interface with the clone's MAC) to keep the configuration in the guest's own network
        stack for later boots, start DHCP there when ``mode`` is ``dhcp`` (vnode then reads
        the address the NIC got) and set the resolver; any other files are the script's own
        (the built-in plugin writes one per stack). None leaves it to another plugin (with
        none, the node boots cold and says why).

    First result. Called once per warm node during planning (``up --warm``), in the main
    thread.
    """


@_spec("console", _instance("ConsoleSetup"), firstresult=True)
def vnode_console_setup(node: NodePlan, context: PluginContext) -> ConsoleSetup | None:
    """Say where the node's serial console is captured from boot on.

    virtlogd creates the file: on SELinux hosts (Fedora) it may do so only where its policy
    lets it (``virt_log_t``, e.g. ``/var/log/libvirt/qemu``), not in ``/var/lib/vnode``.

    :param node: the node's plan so far (its ``console`` is not decided yet).
    :param context: the plugin's config sections, paths and pools.
    :return: a :class:`~vnode.model.ConsoleSetup`, or None to leave it to another plugin.

    First result. Called once per node during planning.
    """


@_spec("config", _sections)
def vnode_config_sections() -> dict[str, type]:
    """Declare the configuration tables this plugin reads.

    :return: ``{"section": AttrsClass}``; each attrs class's fields (with types and
        defaults) are the keys allowed in ``[section]``. The core checks every section
        (unknown key or wrong type: exit 2 naming file, section and key) and hands the
        structured instances to the plugin through ``PluginContext.section(name)``. Two
        plugins may declare the same section only with the same class.

    All results. Called once per command, when the configuration is loaded.
    """


@_spec("doctor", _list_of("Verdict"))
def vnode_doctor_checks(context: PluginContext) -> list[Verdict]:
    """Check what this plugin needs on the host, for ``vnode doctor``.

    :param context: the plugin's view of the configuration, and a libvirt connection (may
        be None when libvirt is unreachable).
    :return: a list of :class:`~vnode.model.Verdict` (ok, warn or fail, one sentence each).
        Network backends are checked through their own ``diagnose()``; this hook is for the
        rest (a site DNS server, a tool the plugin runs).

    All results. Called once by ``vnode doctor``.
    """


@_spec("cli", _cli_apps)
def vnode_cli_commands() -> list[Any]:
    """Contribute sub-commands to the ``vnode`` command line.

    :return: a list of ``cyclopts.App`` objects, each named (``App(name="bridge")``); its
        commands appear as ``vnode NAME ...``. A name the core or another plugin already uses
        is skipped and named.

    All results. Called when the command line starts with a word the core does not know, and
    for ``vnode --help``.
    """


@_spec("domain", _nothing)
def vnode_domain_xml(node: NodePlan, domain: ET.Element) -> None:
    """Adjust a node's libvirt domain before it is defined (a virtiofs share, a watchdog).

    :param node: the node's plan.
    :param domain: the parsed ``<domain>`` element rendered by the core; change it in place.
    :return: nothing.

    All implementations are called, once per node during planning; the result is the
    domain XML kept in the plan.
    """
