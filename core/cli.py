"""The command line: parse, call :mod:`vnode.api`, print. Nothing else lives here."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import cyclopts
from cyclopts import App, Parameter

from vnode import __version__
from vnode.errors import VnodeError
from vnode.launch import HELP_FORMS

if TYPE_CHECKING:
    from vnode.warmstore import TemplateRecord

app = App(
    name="vnode",
    help="Boot fresh libvirt/QEMU nodes from cloud images, many at once; ready when SSH answers.",
    version=__version__,
    exit_on_error=False,
    print_error=False,
    help_on_error=False,
    # main() reports Ctrl-C itself (cyclopts would exit 130 without a word).
    suppress_keyboard_interrupt=False,
    # Help shows the docstrings as written: rendering them as Markdown would load a Markdown
    # parser (a third of --help's time) for text that uses none of it.
    help_format="plaintext",
)
plugins_app = App(name="plugins", help="Plugins found through entry points.")
images_app = App(name="images", help="Base images of the distros.")
template_app = App(
    name="template", help="Warm templates: booted guests saved once, cloned by up --warm."
)
app.command(plugins_app)
app.command(images_app)
app.command(template_app)


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
    disk_extra: Annotated[tuple[int, ...], Parameter(name="--disk-extra", negative=())] = (),
    tpm: Annotated[bool, Parameter(negative=())] = False,
    firmware: str = "bios",
    virt_type: str | None = None,
    network: Annotated[tuple[str, ...], Parameter(name="--network", negative=())] = (),
    bridge: str | None = None,
    direct: str | None = None,
    wait: bool = True,
    keep_failed: bool = False,
    fetch: bool = False,
    cloud_config: Annotated[tuple[str, ...], Parameter(name="--cloud-config", negative=())] = (),
    override_key: Annotated[tuple[str, ...], Parameter(name="--override-key", negative=())] = (),
    run: Annotated[tuple[str, ...], Parameter(name="--run", negative=())] = (),
    script: Annotated[tuple[str, ...], Parameter(name="--script", negative=())] = (),
    wait_cloud_init: bool = False,
    host: str | None = None,
    all_or_nothing: bool = False,
    warm: Annotated[bool, Parameter(negative=())] = False,
    cold: Annotated[bool, Parameter(negative=())] = False,
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
    disk_extra
        An extra disk per node, in GiB (empty, unformatted: vdb, vdc, ... with the serial
        vnode-data1, ...); repeatable.
    tpm
        A TPM 2.0 in every node (swtpm, through libvirt).
    firmware
        bios, uefi (OVMF) or uefi-secure (OVMF, Secure Boot enforced, Microsoft keys
        enrolled); each UEFI node has its own NVRAM.
    virt_type
        auto, kvm or qemu (plain emulation, works where nested KVM does not).
    network
        KIND[:ARG] (libvirt, libvirt:NAME, bridge:br0, direct:eth0) or a libvirt network name;
        repeated: a NIC per network, the first the node's own (its MAC, name and address).
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
    cloud_config
        Your own cloud-config file (a Jinja template: name, number, address, fqdn, pool,
        distro), merged into every node's user-data; repeatable.
    override_key
        Let your cloud-config set this key vnode sets itself (e.g. ssh_genkeytypes); repeatable.
    run
        A shell command to run on every node once it is ready; repeatable, in order.
    script
        A script file to run on every node once it is ready (after --run); repeatable.
    wait_cloud_init
        Ready means cloud-init reports done, not only SSH answering.
    host
        With [[hosts]]: put the nodes on this host (NUM@HOST pins one node).
    all_or_nothing
        With [[hosts]]: if a host fails its preflight, make no node at all.
    warm
        Make nodes from a warm template (a booted guest saved once, made first if missing)
        instead of booting them; nodes that cannot be clones boot cold, and say why.
    cold
        Boot every node, even when [defaults] warm is set.
    json
        Print one JSON object per node instead of the table.
    verbose
        Debug logs on stderr.
    """
    from vnode import api, logs
    from vnode.progress import LiveReporter, results_table
    from vnode.session import Session

    logs.configure(verbose)
    # --bridge and --direct are aliases of --network KIND:ARG (the plugin host maps them).
    aliases = [(kind, arg) for kind, arg in (("bridge", bridge), ("direct", direct)) if arg]
    if len(aliases) + bool(network) > 1:
        raise _usage(
            "give one of --network, --bridge, --direct (several NICs: --network bridge:BR "
            "--network NET ...)"
        )
    if warm and cold:
        raise _usage("give --warm or --cold, not both")
    options = api.UpOptions(
        distro=distro,
        memory=memory,
        vcpus=vcpus,
        disk=disk_size,
        disks=_extra_disks(disk_extra),
        tpm=tpm,
        firmware=firmware,
        timeout=timeout,
        virt_type=virt_type,
        network=network[0] if network else None,
        extra_networks=tuple(network[1:]),
        network_alias=aliases[0] if aliases else None,
        wait=wait,
        keep_failed=keep_failed,
        fetch=fetch,
        cloud_config=tuple(cloud_config),
        override_keys=tuple(override_key),
        run=tuple(run),
        scripts=tuple(script),
        wait_cloud_init=wait_cloud_init,
        host=host,
        all_or_nothing=all_or_nothing,
        warm=True if warm else (False if cold else None),
    )
    with Session.open() as session:
        plan = api.plan_up(list(specs), options, session=session)
        for choice in plan.warm:
            if not choice.warm:
                print(f"vnode: {choice.node}: cold boot: {choice.reason}", file=sys.stderr)
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


def _extra_disks(sizes: tuple[int, ...]) -> tuple[int, ...]:
    from vnode.disks import MAX_EXTRA_DISKS
    from vnode.labfile import MAX_DISK_GB

    if len(sizes) > MAX_EXTRA_DISKS:
        raise _usage(f"--disk-extra: at most {MAX_EXTRA_DISKS} extra disks, not {len(sizes)}")
    for size in sizes:
        if not 1 <= size <= MAX_DISK_GB:
            raise _usage(f"--disk-extra: a disk must be from 1 to {MAX_DISK_GB} GiB, not {size}")
    return tuple(sizes)


@app.command(name="plan")
def plan(lab_file: str, *, prune: bool = False, update: bool = False, json: bool = False) -> int:
    """What `vnode apply LAB_FILE` would do, per node: create, replace (and why), keep, and
    with --prune remove; reads only.

    Parameters
    ----------
    lab_file
        The lab file (TOML: [lab], [defaults], [[nodes]]; see README).
    prune
        Also list the nodes this lab made that the file no longer names, as remove.
    update
        Plan with the image store's current images instead of those lab.lock pins.
    json
        Print the plan as JSON.
    """
    from pathlib import Path

    from vnode import api, logs

    logs.configure(False)
    planned = api.plan_lab(Path(lab_file), prune=prune, update=update)
    if json:
        _emit_json(planned.to_dict())
        return 0
    print(planned.summary())
    for action in planned.actions:
        print(f"  {action.describe()}")
    return 0


@app.command(name="apply")
def apply(
    lab_file: str,
    *,
    prune: bool = False,
    update: bool = False,
    yes: bool = False,
    timeout: float | None = None,
    wait: bool = True,
    json: bool = False,
) -> int:
    """Make the lab what LAB_FILE says: create and replace nodes in parallel as `up` does,
    leave the others untouched; replacing or removing a node needs --yes (or an answer at
    the prompt). Applying an unchanged file does nothing.

    Parameters
    ----------
    lab_file
        The lab file (TOML: [lab], [defaults], [[nodes]]; see README).
    prune
        Also remove the nodes this lab made that the file no longer names.
    update
        Make nodes from the image store's current images and rewrite lab.lock (without it,
        nodes are made from the images lab.lock pins).
    yes
        Replace and remove without asking.
    timeout
        Seconds to wait for SSH, counted from the start of the nodes' creation.
    wait
        Wait for SSH (--no-wait returns once the domains run; not with `run` commands).
    json
        Print one JSON object per node made instead of the table.
    """
    from pathlib import Path

    from vnode import api, logs
    from vnode.progress import LiveReporter, results_table
    from vnode.session import Session

    logs.configure(False)
    with Session.open() as session:
        planned = api.plan_lab(Path(lab_file), prune=prune, update=update, session=session)
        api.check_apply(planned, wait=wait)
        print(planned.summary(), file=sys.stderr)
        changes = planned.of("create", "update", "replace", "remove")
        for action in changes:
            print(f"  {action.describe()}", file=sys.stderr)
        if not changes:
            if json:
                _emit_json([])
            return 0
        destructive = planned.of("replace", "remove")
        if destructive and not yes and not _confirmed(len(destructive)):
            raise _usage(
                f"{len(destructive)} node(s) would be replaced or removed: "
                "give --yes (see `vnode plan`)"
            )
        made = [a.node for a in planned.of("create", "replace")]
        try:
            with LiveReporter(made) as reporter:
                results = api.apply_lab(
                    planned, session=session, timeout=timeout, reporter=reporter, wait=wait
                )
        except KeyboardInterrupt:
            print(f"vnode: interrupted; {_left_behind(made, session)}", file=sys.stderr)
            return 130
    if json:
        _emit_json([r.to_dict() for r in results])
    elif results:
        print(results_table(results))
    return 0 if all(r.state in ("ready", "started") for r in results) else 1


def _confirmed(count: int) -> bool:
    """Asked on a terminal only: a script must say --yes."""
    if not sys.stdin.isatty():
        return False
    answer = input(f"replace or remove {count} node(s)? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _left_behind(names: list[str], session: object) -> str:
    """Every node is whole or absent after an interrupt; say which, so the user can act."""
    from vnode import api

    nodes = api.list_nodes(session)  # type: ignore[arg-type]
    existing = {node.name: node.state for node in nodes if node.name in names}
    whole = ", ".join(f"{name} ({state})" for name, state in existing.items()) or "none"
    absent = ", ".join(name for name in names if name not in existing) or "none"
    return f"nodes left whole: {whole}; absent: {absent}; `vnode destroy` removes them"


@app.command(name="list")
def list_(json: bool = False, names: bool = False) -> int:
    """List the nodes vnode made, with state and address.

    Parameters
    ----------
    json
        Print one JSON object per node.
    names
        Print only the names, one per line (what shell completion offers).
    """
    from vnode import api
    from vnode.hosts import LOCAL
    from vnode.progress import format_table

    nodes, unreachable = api.list_lab()
    if names:
        print("\n".join(sorted(n.name for n in nodes)))
    elif json:
        _emit_json([n.to_dict() for n in nodes])
    elif any(n.host != LOCAL for n in nodes) or unreachable:
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


@app.command
def wait(
    *specs: str,
    timeout: float | None = None,
    wait_cloud_init: bool = False,
    run: Annotated[tuple[str, ...], Parameter(name="--run", negative=())] = (),
    script: Annotated[tuple[str, ...], Parameter(name="--script", negative=())] = (),
    json: bool = False,
) -> int:
    """Wait until existing nodes answer SSH (as up does); exit 1 if any does not.

    Parameters
    ----------
    specs
        Nodes, e.g. 3 vnode04 1-10.
    timeout
        Seconds to wait, counted from now (default: the configured timeout).
    wait_cloud_init
        Ready means cloud-init reports done, not only SSH answering.
    run
        A shell command to run on every node once it is ready; repeatable, in order.
    script
        A script file to run on every node once it is ready (after --run); repeatable.
    json
        Print one JSON object per node instead of the table.
    """
    from vnode import api, logs
    from vnode.progress import LiveReporter, results_table

    logs.configure()
    if not specs:
        raise _usage("name nodes to wait for, e.g. `vnode wait 1-3`")
    with LiveReporter([]) as reporter:
        results = api.wait(
            list(specs),
            timeout=timeout,
            wait_cloud_init=wait_cloud_init,
            run=tuple(run),
            scripts=tuple(script),
            reporter=reporter,
        )
    if json:
        _emit_json([r.to_dict() for r in results])
    else:
        print(results_table(results))
    return 0 if all(r.state == "ready" for r in results) else 1


def _power(action: str, specs: tuple[str, ...], json: bool, **options: float) -> int:
    from vnode import api

    if not specs:
        raise _usage(f"name nodes to {action}, e.g. `vnode {action} 1-3`")
    outcomes = api.power(action, list(specs), **options)
    if json:
        _emit_json([{"name": name, "outcome": outcome} for name, outcome in outcomes.items()])
    else:
        for name, outcome in outcomes.items():
            print(f"{name}: {outcome}")
    return 0


@app.command
def start(*specs: str, json: bool = False) -> int:
    """Start stopped nodes (running ones are left alone); `vnode wait` waits for SSH.

    Parameters
    ----------
    specs
        Nodes, e.g. 3 vnode04 1-10.
    json
        Print {name, outcome} per node.
    """
    return _power("start", specs, json)


@app.command
def stop(*specs: str, timeout: float = 60.0, json: bool = False) -> int:
    """Shut nodes down cleanly (ACPI), forced off after --timeout; all at once.

    Parameters
    ----------
    specs
        Nodes, e.g. 3 vnode04 1-10.
    timeout
        Seconds to wait for a clean shutdown before forcing the node off.
    json
        Print {name, outcome} per node.
    """
    return _power("stop", specs, json, stop_timeout=timeout)


@app.command
def reboot(*specs: str, timeout: float = 60.0, json: bool = False) -> int:
    """Reboot running nodes (a clean shutdown, then a start), start stopped ones; all at once.
    `vnode wait` then waits for SSH.

    Parameters
    ----------
    specs
        Nodes, e.g. 3 vnode04 1-10.
    timeout
        Seconds to wait for the clean shutdown before forcing the node off.
    json
        Print {name, outcome} per node.
    """
    return _power("reboot", specs, json, stop_timeout=timeout)


@app.command(name="ssh-config")
def ssh_config(*specs: str) -> int:
    """Print an OpenSSH config block per node, for ssh -F, scp and rsync.

    ``ssh -F <(vnode ssh-config) vnode03``; ``scp -F <(vnode ssh-config) f vnode03:/tmp``.

    Parameters
    ----------
    specs
        Nodes (e.g. 3 vnode04 1-10); all of vnode's nodes when none is given.
    """
    from vnode import api

    sys.stdout.write(api.ssh_config(list(specs)))
    return 0


@app.command
def inventory(
    *specs: str,
    format: Annotated[str, Parameter(name=["--format", "-f"])] = "ini",
    list_: Annotated[bool, Parameter(name="--list", negative=())] = False,
    host: str | None = None,
    json: bool = False,
) -> int:
    """Print an Ansible inventory: groups per pool and per distro family, ssh vars set.

    ``ansible -i <(vnode inventory) all -m ping``. As a dynamic inventory script, vnode
    answers ``--list`` (JSON) and ``--host NAME`` (empty: host vars are in ``_meta``).

    Parameters
    ----------
    specs
        Nodes (e.g. 3 vnode04 1-10); all of vnode's nodes when none is given.
    format
        ini, yaml or json (the JSON of a dynamic inventory script).
    list_
        Dynamic inventory protocol: the JSON inventory.
    host
        Dynamic inventory protocol: one host's vars (always {}, they are in _meta).
    json
        Same as --format json.
    """
    from vnode import api

    if host is not None:
        _emit_json({})
        return 0
    sys.stdout.write(api.inventory(list(specs), "json" if list_ or json else format))
    return 0


@plugins_app.command(name="list")
def plugins_list(json: bool = False) -> int:
    """Each plugin: name, kind, version, distribution, entry point, status."""
    from vnode import api
    from vnode.progress import format_table
    from vnode.session import Session

    with Session.open() as session:
        # A plugin command whose name is taken is noted on its plugin.
        session.plugins.cli_commands(taken=set(app))
        infos = api.plugins(session)
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
def images_list(json: bool = False, names: bool = False, versions: bool = False) -> int:
    """Per distro the plugins know: latest / one-but-last / end of life, whether its image is
    present, its size, how it was verified, and where `fetch` gets it.

    Parameters
    ----------
    names
        Only the names `up` and `fetch` take, one a line (`fedora`, `fedora~1`, `f45`, ...),
        for shell completion and scripts.
    versions
        Only the image versions in the store: each one's digest, the distro it was added
        as, whether a name points at it, and what uses it (nodes, templates, lab.lock files).
    """
    from vnode import api
    from vnode.progress import format_table

    if names:
        print("\n".join(api.distro_names()))
        return 0
    kept = api.list_image_versions()
    if versions:
        if json:
            _emit_json([v.to_dict() for v in kept])
        else:
            _print_versions(kept)
        return 0
    entries = api.list_images()
    if json:
        _emit_json([e.to_dict() for e in entries])
        return 0
    rows = [
        (
            e.distro,
            e.title,
            e.role or "-",
            "yes" if e.present else "no",
            e.size_human,
            e.status,
            e.url or "-",
        )
        for e in entries
    ]
    headers = ("DISTRO", "TITLE", "ROLE", "PRESENT", "SIZE", "STATUS", "FROM")
    print(format_table(rows, headers))
    catalogs = sorted({(e.family, e.catalog) for e in entries if e.catalog})
    for family, catalog in catalogs:
        print(f"{family} catalog: {catalog}")
    if kept:
        print()
        _print_versions(kept)
    return 0


def _print_versions(kept: list[Any]) -> None:
    from vnode.progress import format_table

    rows = [
        (
            v.sha256[:12],
            v.name or "-",
            "current" if v.current else "old",
            v.status,
            v.size_human,
            ", ".join(u for u in v.users if not u.startswith("name ")) or "-",
        )
        for v in kept
    ]
    print(format_table(rows, ("VERSION", "AS", "STATE", "STATUS", "SIZE", "USED BY")))


@images_app.command(name="prune")
def images_prune() -> int:
    """Remove the image versions nothing uses any more: not a distro's current image, not
    the base of a node or a warm template, not pinned by a lab.lock; here and in every
    host's pool (vnode does this itself after `destroy` and `template remove`)."""
    from vnode import api, logs

    logs.configure()
    removed, down = api.prune_images()
    for line in removed:
        print(f"removed {line}")
    if not removed:
        print("nothing to remove")
    for host, why in down.items():
        print(f"vnode: host {host} not checked: {why}", file=sys.stderr)
    return 1 if down else 0


@images_app.command(name="refresh")
def images_refresh(json: bool = False) -> int:
    """Learn each family's releases from upstream's metadata (Fedora's releases.json,
    Ubuntu's simplestreams, Debian's image tree) and cache them in vnode's state.

    A family whose metadata cannot be read or makes no sense keeps its cached catalog (or
    the plugin's built-in table); exit 1 names it.
    """
    from vnode import api, logs

    logs.configure()
    outcomes, failures = api.refresh_catalogs()
    if json:
        _emit_json([o.to_dict() for o in outcomes] + [{"failed": line} for line in failures])
    else:
        for o in outcomes:
            previous = f", one-but-last {o.previous}" if o.previous else ""
            print(f"{o.family}: latest {o.latest}{previous} ({o.releases} releases, {o.origin})")
    for line in failures:
        print(f"vnode: refresh failed, cached catalog kept: {line}", file=sys.stderr)
    return 1 if failures else 0


@images_app.command(name="show")
def images_show(distro: str, json: bool = False) -> int:
    """Print the exact image URL, checksum URL and format `fetch` would use; downloads nothing.

    Parameters
    ----------
    distro
        A distro name, e.g. f44, fedora, u26.04.
    json
        Print a JSON object.
    """
    from vnode import api

    source = api.show_image(distro)
    if json:
        _emit_json(source.to_dict())
        return 0
    print(f"distro:          {source.distro} ({source.title})")
    if source.role:
        print(f"role:            {source.role}")
    print(f"image:           {source.image_url or '-'}")
    print(f"checksum file:   {source.checksum_url or '-'} ({source.checksum_format or '-'})")
    print(f"format:          {source.image_format}")
    if source.sha256:
        print(f"sha256 (meta):   {source.sha256}")
    for alternate in source.alternates:
        print(f"else:            {alternate['image_url']}")
    if source.catalog:
        print(f"catalog:         {source.catalog}")
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
    allow_backing: bool = False,
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
    allow_backing
        Import an image that reads other files (a backing or data file): they are copied in.
    """
    from pathlib import Path

    from vnode import api

    dest, record = api.import_image(Path(path), as_, force=force, allow_backing=allow_backing)
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


@template_app.command(name="make")
def template_make(
    distro: str,
    *,
    memory: int | None = None,
    vcpus: int | None = None,
    disk_size: int | None = None,
    virt_type: str | None = None,
    host: str | None = None,
    json: bool = False,
) -> int:
    """Make the warm template `up --warm` clones DISTRO's nodes from (one boot, then saved),
    on the host its clones run on; a template already made is kept. Shape options default
    to the configured ones, as up.

    Parameters
    ----------
    distro
        The distro, e.g. d12.
    memory
        Memory in MiB (clones get the template's).
    vcpus
        Virtual CPUs.
    disk_size
        Disk size in GiB.
    virt_type
        auto, kvm or qemu.
    host
        The [[hosts]] host to make it on (needed when the lab has several).
    json
        Print the template's record as JSON.
    """
    from vnode import api, logs

    logs.configure()
    options = api.UpOptions(
        memory=memory, vcpus=vcpus, disk=disk_size, virt_type=virt_type, host=host
    )
    record = api.make_template(
        distro, options, progress=lambda line: print(f"vnode: {line}", file=sys.stderr)
    )
    if json:
        _emit_json(record.to_dict())
    else:
        print(f"{record.distro}: template {record.key} on {record.host} at {record.directory}")
    return 0


@template_app.command(name="list")
def template_list(json: bool = False) -> int:
    """The warm templates made on every host: key, host, distro, shape, when, state size.

    Parameters
    ----------
    json
        Print one JSON object per template.
    """
    from vnode import api
    from vnode.progress import format_table

    records, unreachable = api.list_templates_of_lab()
    if json:
        _emit_json([r.to_dict() for r in records])
    else:
        print(format_table([_template_row(r) for r in records], _TEMPLATE_HEADERS))
    for name, problem in unreachable.items():
        print(
            f"vnode: host {name} did not answer, its templates are not listed: {problem}",
            file=sys.stderr,
        )
    return 1 if unreachable else 0


_TEMPLATE_HEADERS = ("KEY", "HOST", "DISTRO", "MEMORY", "VCPUS", "VIRT", "DISK", "STATE", "MADE")


def _template_row(r: TemplateRecord) -> tuple[str, ...]:
    return (
            r.key,
            r.host,
            r.distro,
            f"{r.memory_mib} MiB",
            str(r.vcpus),
            r.virt_type,
            f"{r.disk_gb} GiB",
            f"{r.save_bytes >> 20} MiB",
            r.made,
    )  # fmt: skip


@template_app.command(name="remove")
def template_remove(which: str, *, host: str | None = None) -> int:
    """Remove a template (by key or the start of one) or every template of a distro, on
    every host or one; refused while a node still runs on it.

    Parameters
    ----------
    which
        A key from `vnode template list`, or a distro, e.g. d12.
    host
        Only on this [[hosts]] host.
    """
    from vnode import api

    for record in api.remove_templates(which, host=host):
        print(f"{record.key} ({record.distro}) on {record.host}: removed")
    return 0


@app.command
def completion(shell: str, *, install: bool = False) -> int:
    """Shell completion (commands, options, node names) for bash or zsh.

    ``source <(vnode completion bash)`` for this shell; ``vnode completion bash --install``
    for good (bash-completion loads it from ~/.local/share/bash-completion/completions);
    ``vnode completion zsh --install`` writes ~/.zfunc/_vnode: add ``fpath+=(~/.zfunc)``
    before ``compinit`` in ~/.zshrc.

    Parameters
    ----------
    shell
        bash or zsh.
    install
        Write the script where the shell finds it, instead of printing it.
    """
    from vnode import completion as completion_module

    if shell not in completion_module.SHELLS:
        raise _usage(f"unknown shell {shell!r}: use {', '.join(completion_module.SHELLS)}")
    _add_plugin_commands(["--help"])  # plugins' commands are completed too
    script = completion_module.render(shell, app)
    if not install:
        sys.stdout.write(script)
        return 0
    from vnode.files import write_atomic

    path = completion_module.install_path(shell)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, script)
    print(f"installed {path}")
    if shell == "zsh":
        print("add `fpath+=(~/.zfunc)` before `compinit` in ~/.zshrc, then start a new shell")
    else:
        print("start a new shell (bash-completion loads it), or `source` it now")
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
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        # A background job of a script starts with SIGINT ignored; SIGTERM must still stop it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.raise_signal(signal.SIGINT)


def remote_command_verbatim(tokens: list[str]) -> list[str]:
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
    from vnode.session import Session

    try:
        plugins = Session.open().plugins  # opens nothing but the config and the plugins
    except VnodeError:
        return  # the command itself reports the broken configuration
    for plugin_app in plugins.cli_commands(taken=core_words):
        app.command(plugin_app)
    for line in plugins.skipped_commands:
        print(f"vnode: {line}", file=sys.stderr)


def _print_help(tokens: list[str]) -> int:
    """The top-level help, kept for the console script's next ``vnode --help``."""
    import io

    from rich.console import Console

    from vnode.launch import store_help

    terminal = Console()  # where cyclopts would print: stdout, as it is
    buffer = io.StringIO()
    capture = Console(
        file=buffer,
        force_terminal=terminal.is_terminal,
        width=terminal.width,
        color_system=terminal.color_system,  # type: ignore[arg-type]
        no_color=terminal.no_color,
    )
    app.help_print([], console=capture)
    sys.stdout.write(buffer.getvalue())
    store_help(tokens, buffer.getvalue())
    return 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    tokens = remote_command_verbatim(argv if argv is not None else sys.argv[1:])
    try:
        _add_plugin_commands(tokens)
        # A bare `vnode` shows what it can do rather than complaining that no node was named.
        if tokens in HELP_FORMS:
            return _print_help(tokens)
        code = app(tokens, result_action="return_value")
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
    except BrokenPipeError:
        # `vnode list | head`: the reader has what it wanted. Python would complain again
        # when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
