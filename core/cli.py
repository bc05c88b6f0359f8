"""The command line: parse, call :mod:`vnode.api`, print. Nothing else lives here."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Annotated

import cyclopts
from cyclopts import App, Parameter

from vnode import __version__
from vnode.errors import VnodeError

app = App(
    name="vnode",
    help="Boot fresh libvirt/QEMU nodes from cloud images, many at once; ready when SSH answers.",
    version=__version__,
    exit_on_error=False,
    print_error=False,
    help_on_error=False,
    # main() reports Ctrl-C itself (cyclopts would exit 130 without a word).
    suppress_keyboard_interrupt=False,
)
plugins_app = App(name="plugins", help="Plugins found through entry points.")
images_app = App(name="images", help="Base images of the distros.")
app.command(plugins_app)
app.command(images_app)


def _emit_json(data: object) -> None:
    print(json.dumps(data, indent=2))


@app.default
@app.command(name="up")
def up(
    *specs: str,
    distro: Annotated[str | None, Parameter(name=["--distro", "-d"])] = None,
    timeout: float | None = None,
    memory: int | None = None,
    vcpus: int | None = None,
    disk_size: int | None = None,
    virt_type: str | None = None,
    network: str | None = None,
    bridge: str | None = None,
    direct: str | None = None,
    wait: bool = True,
    keep_failed: bool = False,
    fetch: bool = False,
    host: str | None = None,
    json: bool = False,
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"])] = False,
) -> int:
    """Create or re-create nodes in parallel and wait until all answer SSH.

    Parameters
    ----------
    specs
        Nodes as [STEM]NUM[:DISTRO], e.g. 3, vnode04, vnode18:u24.04.
    distro
        Distro of nodes whose spec names none (default: the configured one).
    timeout
        Seconds to wait for SSH, counted from the command's start (default 120).
    memory
        Memory per node in MiB.
    vcpus
        Virtual CPUs per node.
    disk_size
        Disk size per node in GiB.
    virt_type
        auto, kvm or qemu (plain emulation, works where nested KVM does not).
    network
        KIND[:ARG] (libvirt, libvirt:NAME, bridge:br0, direct:eth0) or a libvirt network name.
    bridge
        Shorthand for --network bridge:BRIDGE.
    direct
        Shorthand for --network direct:DEVICE (macvtap).
    wait
        Wait for SSH (--no-wait returns once the domains run).
    keep_failed
        Keep nodes that failed or timed out, for inspection.
    fetch
        Download missing images (verified) before creating anything.
    host
        With [[hosts]]: put the nodes on this host (NUM@HOST pins one node).
    json
        Print one JSON object per node instead of the table.
    verbose
        Debug logs on stderr.
    """
    from vnode import api, logs
    from vnode.progress import LiveReporter, results_table
    from vnode.session import Session

    logs.configure(verbose)
    chosen = [
        n for n in (network, bridge and f"bridge:{bridge}", direct and f"direct:{direct}") if n
    ]
    if len(chosen) > 1:
        raise _usage("give one of --network, --bridge, --direct")
    options = api.UpOptions(
        distro=distro,
        memory=memory,
        vcpus=vcpus,
        disk=disk_size,
        timeout=timeout,
        virt_type=virt_type,
        network=chosen[0] if chosen else None,
        wait=wait,
        keep_failed=keep_failed,
        fetch=fetch,
        host=host,
    )
    with Session.open() as session:
        plan = api.plan_up(list(specs), options, session=session)
        try:
            with LiveReporter(plan.names) as reporter:
                results = api.execute_up(plan, session=session, reporter=reporter)
        except KeyboardInterrupt:
            print(f"vnode: interrupted; {_left_behind(plan.names, session)}", file=sys.stderr)
            return 130
    if json:
        _emit_json([r.to_dict() for r in results])
    else:
        print(results_table(results))
    return 0 if all(r.state in ("ready", "started") for r in results) else 1


def _left_behind(names: list[str], session: object) -> str:
    """Every node is whole or absent after an interrupt; say which, so the user can act."""
    from vnode import api

    nodes = api.list_nodes(session)  # type: ignore[arg-type]
    existing = {node.name: node.state for node in nodes if node.name in names}
    whole = ", ".join(f"{name} ({state})" for name, state in existing.items()) or "none"
    absent = ", ".join(name for name in names if name not in existing) or "none"
    return f"nodes left whole: {whole}; absent: {absent}; `vnode destroy` removes them"


@app.command(name="list")
def list_(json: bool = False) -> int:
    """List the nodes vnode made, with state and address."""
    from vnode import api
    from vnode.progress import format_table

    nodes, unreachable = api.list_lab()
    if json:
        _emit_json([n.to_dict() for n in nodes])
    elif any(n.host != "local" for n in nodes) or unreachable:
        rows = [(n.name, n.host, n.distro, n.state, n.ip or "-", n.mac, n.network) for n in nodes]
        print(format_table(rows, ("NODE", "HOST", "DISTRO", "STATE", "IP", "MAC", "NETWORK")))
    else:
        rows = [(n.name, n.distro, n.state, n.ip or "-", n.mac, n.network) for n in nodes]
        print(format_table(rows, ("NODE", "DISTRO", "STATE", "IP", "MAC", "NETWORK")))
    for name, problem in unreachable.items():
        print(
            f"vnode: host {name} did not answer, its nodes are not listed: {problem}",
            file=sys.stderr,
        )
    return 1 if unreachable else 0


@app.command
def destroy(*specs: str, all: bool = False) -> int:
    """Destroy nodes vnode made (domain, disk, seed, reservation, known_hosts entry).

    Parameters
    ----------
    specs
        Nodes to destroy, e.g. 3 vnode04.
    all
        Destroy every node vnode made.
    """
    from vnode import api

    if not specs and not all:
        raise _usage("name nodes to destroy, or --all")
    for name, outcome in api.destroy(list(specs), all_nodes=all).items():
        print(f"{name}: {outcome}")
    return 0


@app.command
def ssh(node: str, *command: str) -> int:
    """Open SSH to a node as root (host key checked strictly), or run COMMAND there.

    Parameters
    ----------
    node
        The node, e.g. 3 or vnode03.
    command
        A command to run instead of a login shell.
    """
    from vnode import api

    argv = api.ssh_argv(node, list(command))
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 1  # not reached


@app.command
def log(node: str, follow: Annotated[bool, Parameter(name=["--follow", "-f"])] = False) -> int:
    """Show the node's serial console, captured from boot on.

    Parameters
    ----------
    node
        The node, e.g. 3 or vnode03.
    follow
        Keep printing what the console prints, like tail -f.
    """
    from vnode import api
    from vnode.session import Session

    offset = 0
    # One session for the whole follow: with [[hosts]] the console is read back from the
    # node's host over the same connection each time.
    with Session.open() as session:
        try:
            while True:
                chunk = api.read_console(node, offset, session=session)
                if chunk:
                    offset += len(chunk)
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                elif follow:
                    time.sleep(0.5)
                else:
                    return 0
        except KeyboardInterrupt:  # Ctrl-C is how following ends, as with tail -f
            return 0


@plugins_app.command(name="list")
def plugins_list(json: bool = False) -> int:
    """Each plugin: name, kind, version, distribution, entry point, status."""
    from vnode import api
    from vnode.progress import format_table

    infos = api.plugins()
    if json:
        _emit_json([info.to_dict() for info in infos])
        return 0
    rows = [
        (
            i.name,
            ",".join(i.kinds) or "-",
            i.version,
            i.distribution,
            i.entry_point,
            i.status if i.status == "ok" else f"broken: {i.reason}",
            "; ".join(i.notes),
        )
        for i in infos
    ]
    headers = ("NAME", "KIND", "VERSION", "DISTRIBUTION", "ENTRY POINT", "STATUS", "NOTES")
    print(format_table(rows, headers))
    return 0


@images_app.command(name="list")
def images_list(json: bool = False) -> int:
    """Per distro the plugins know: whether its image is present, its size, how it was verified."""
    from vnode import api
    from vnode.progress import format_table

    entries = api.list_images()
    if json:
        _emit_json([e.to_dict() for e in entries])
        return 0
    rows = [
        (e.distro, e.title, "yes" if e.present else "no", e.size_human, e.status, str(e.path))
        for e in entries
    ]
    print(format_table(rows, ("DISTRO", "TITLE", "PRESENT", "SIZE", "STATUS", "PATH")))
    return 0


@images_app.command(name="fetch")
def images_fetch(*distros: str, force: bool = False, json: bool = False) -> int:
    """Download images in parallel, each verified against the distro's published checksum.

    Parameters
    ----------
    distros
        Distros to fetch, e.g. f43 u24.04 d12.
    force
        Download again even if the image is present (it is replaced only once verified).
    json
        Print one JSON object per distro instead of one line each.
    """
    from vnode import api, logs
    from vnode.progress import LiveReporter

    logs.configure()
    if not distros:
        raise _usage("name distros to fetch, e.g. f43 u24.04 d12")
    with LiveReporter([]) as reporter:
        outcomes = api.fetch_images(list(distros), force=force, reporter=reporter)
    failed = [o for o in outcomes if o.state == "failed"]
    if json:
        _emit_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            print(f"{o.distro}: {o.state}" + ("" if o in failed else f" at {o.path}"))
    for o in failed:
        print(f"vnode: {o.distro}: {o.detail}", file=sys.stderr)
    return 1 if failed else 0


@images_app.command(name="import")
def images_import(
    path: str,
    *,
    as_: Annotated[str, Parameter(name="--as")],
    force: bool = False,
) -> int:
    """Register your own image (qcow2, or any format qemu-img converts) as a distro's image.

    Parameters
    ----------
    path
        The image file.
    as_
        The distro it is (f43, u24.04, d12, ...); the image is stored under its name.
    force
        Replace an image already in the store.
    """
    from pathlib import Path

    from vnode import api

    dest, record = api.import_image(Path(path), as_, force=force)
    how = f"converted from {record.converted_from}" if record.converted_from else "copied"
    print(f"{dest.name.removesuffix('.qcow2')}: imported at {dest} ({how}, sha256 {record.sha256})")
    return 0


@images_app.command(name="build")
def images_build(*distros: str, force: bool = False) -> int:
    """Build images locally from a distro mirror (no download), e.g. d12.

    Parameters
    ----------
    distros
        Distros to build, e.g. d12.
    force
        Rebuild even if the image is present.
    """
    from vnode import api, logs

    logs.configure()
    if not distros:
        raise _usage("name a distro to build, e.g. d12")
    for distro in distros:
        path, built = api.build_image(distro, force=force)
        print(f"{distro}: {'built' if built else 'present'} at {path}")
    return 0


@app.command
def doctor(*, network: str | None = None, json: bool = False) -> int:
    """Check the host: one verdict per line (ok, warn, fail); exit 1 if anything fails.

    Parameters
    ----------
    network
        Check this network (KIND[:ARG], e.g. bridge:br0) instead of the configured one.
    json
        Print the verdicts as JSON.
    """
    from vnode import api
    from vnode.doctor import healthy

    verdicts = api.doctor(network)
    if json:
        _emit_json([v.to_dict() for v in verdicts])
    else:
        for v in verdicts:
            print(f"{v.status:<5} {v.check:<10} {v.message}")
    return 0 if healthy(verdicts) else 1


def _usage(message: str) -> VnodeError:
    from vnode.errors import UsageError

    return UsageError(message)


def _terminate_like_interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same orderly path as Ctrl-C: no node is left half-made.
    signal.raise_signal(signal.SIGINT)


def _remote_command_verbatim(tokens: list[str]) -> list[str]:
    """`vnode ssh NODE uname -a`: as with ssh, all after the node is the remote command,
    options included, so it is not parsed as vnode's own options."""
    command_follows = len(tokens) >= 3 and tokens[0] == "ssh" and not tokens[1].startswith("-")
    if command_follows and tokens[2] != "--":
        return [*tokens[:2], "--", *tokens[2:]]
    return tokens


def _add_plugin_commands(tokens: list[str]) -> None:
    """Plugins' sub-commands (``vnode bridge create`` comes from the bridge plugin), loaded
    only when the command line asks for a word the core does not know, or for help: quick
    core commands do not pay for loading every plugin."""
    first = tokens[0] if tokens else "--help"
    core_words = set(app)
    if first not in ("--help", "-h") and (first in core_words or first.startswith("-")):
        return
    from vnode.plugins import PluginHost

    try:
        from vnode.config import read_config

        host = PluginHost.discover(read_config().disabled_plugins())
    except VnodeError:
        return  # the command itself reports the broken configuration
    for plugin_app in host.cli_commands():
        name = plugin_app.name[0] if isinstance(plugin_app.name, tuple) else plugin_app.name
        if name in core_words:
            continue
        app.command(plugin_app)
        core_words.add(name)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    tokens = _remote_command_verbatim(argv if argv is not None else sys.argv[1:])
    try:
        _add_plugin_commands(tokens)
        # A bare `vnode` shows what it can do rather than complaining that no node was named.
        code = app(tokens or ["--help"], result_action="return_value")
    except cyclopts.CycloptsError as exc:
        message = " ".join(str(exc).split())
        print(f"vnode: {message}", file=sys.stderr)
        return 2
    except VnodeError as exc:
        print(f"vnode: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vnode: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
