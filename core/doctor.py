"""``vnode doctor``: is this host ready for vnode? One verdict per check, each with one sentence.

A check never raises: whatever goes wrong becomes its verdict, so the doctor always finishes
and every problem is on the list. ``fail`` means ``up`` would fail (or not start); ``warn``
means it works, but slowly or with a limitation worth knowing.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vnode import firmware
from vnode.config import Config
from vnode.errors import VnodeError
from vnode.hosts import lab_hosts
from vnode.model import Verdict
from vnode.session import Session

OK, WARN, FAIL = "ok", "warn", "fail"
KVM_DEVICE = Path("/dev/kvm")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")


def healthy(verdicts: list[Verdict]) -> bool:
    return all(v.status != FAIL for v in verdicts)


def run_checks(session: Session | None = None, network: str | None = None) -> list[Verdict]:
    """Every check, in the order a user would fix things; plugins add their own."""
    verdicts: list[Verdict] = []
    if session is None:
        try:
            session = Session.open()
            verdicts.append(Verdict("config", OK, _sources(session.config)))
        except VnodeError as exc:
            verdicts.append(Verdict("config", FAIL, f"{exc}; the checks below use the defaults"))
            session = Session.for_config(Config())
    config = session.config
    conn = _connect(session, verdicts)
    checks: list[Callable[[], Iterator[Verdict]]] = [
        lambda: check_virt_type(conn, config.defaults.virt_type),
        lambda: iter([kvm_device_verdict(_kvm_stat())]),
        lambda: check_virtlogd(config.defaults.uri),
        lambda: check_reaper(config.defaults.uri),
        lambda: iter(
            [tpm_verdict(shutil.which("swtpm"), shutil.which("swtpm_setup"), _not_owned_by_tss())]
        ),
        lambda: iter([ksm_verdict(_ksm_values())]),
        lambda: iter([firmware_verdict(firmware.host_support(firmware.read_descriptors()))]),
        lambda: check_network(session, network or config.defaults.network, conn is not None),
        lambda: check_hosts(session),
        lambda: iter(session.plugins.doctor_checks(session.plugin_context(connect=False))),
        lambda: check_images(config.paths.images),
        lambda: check_signatures(session),
        lambda: check_paths(config),
        lambda: check_leftovers(session, conn),
        lambda: check_plugins(session),
    ]
    for check in checks:
        try:
            verdicts.extend(check())
        except Exception as exc:  # a doctor that crashes tells nothing
            verdicts.append(
                Verdict("doctor", FAIL, f"a check crashed: {type(exc).__name__}: {exc}")
            )
    return verdicts


def _sources(config: Config) -> str:
    if not config.sources:
        return "no config file; built-in defaults"
    return "read " + ", ".join(str(p) for p in config.sources)


LIBVIRT_CHECK = "libvirt"


def _connect(session: Session, verdicts: list[Verdict]) -> Any | None:
    uri = session.config.defaults.uri
    try:
        conn = session.conn
    except VnodeError as exc:
        hint = start_hint(read_os_release(), Path("/run/systemd/system").is_dir())
        verdicts.append(
            Verdict(LIBVIRT_CHECK, FAIL, f"{str(exc).split(': start it', 1)[0]}; {hint}")
        )
        return None
    version = _version(conn.getLibVersion())
    daemon = (
        "" if urlparse(uri).hostname else _daemon_kind(_process_named(("virtqemud", "libvirtd")))
    )
    verdicts.append(Verdict(LIBVIRT_CHECK, OK, f"libvirt {version} answers at {uri}{daemon}"))
    return conn


def _daemon_kind(found: tuple[str, int] | None) -> str:
    if found is None:
        return " (socket-activated; no daemon running right now)"
    name, _ = found
    return " (virtqemud: modular daemons)" if name == "virtqemud" else " (libvirtd: monolithic)"


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """os-release's KEY=value pairs (quotes removed); empty if there is none."""
    values = {}
    try:
        text = path.read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


def is_fedora_like(os_release: dict[str, str]) -> bool:
    family = {os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()}
    return bool(family & {"fedora", "rhel", "centos"})


def start_hint(os_release: dict[str, str], systemd: bool) -> str:
    """How to install and start libvirt on this host, for the doctor's failure line."""
    if is_fedora_like(os_release):
        return (
            "install: `dnf install qemu-kvm-core libvirt-daemon-driver-qemu "
            "libvirt-daemon-driver-network libvirt-daemon-driver-storage-core libvirt-client`; "
            "start: `systemctl enable --now virtqemud.socket virtnetworkd.socket "
            "virtstoraged.socket virtlogd.socket` (or install/setup-host.sh)"
        )
    if systemd:
        return (
            "install: `apt install libvirt-daemon-system qemu-system-x86`; start: "
            "`systemctl start virtlogd libvirtd` (or install/setup-host.sh)"
        )
    return "without systemd: `virtlogd -d` and `tini -s -- libvirtd` (install/setup-host.sh does)"


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def check_virt_type(conn: Any | None, wanted: str) -> Iterator[Verdict]:
    if conn is None:
        yield Verdict("virt type", WARN, "not checked: libvirt is unreachable")
        return
    offered = domain_types(conn.getCapabilities())
    yield virt_type_verdict(wanted, offered)


def domain_types(capabilities_xml: str) -> set[str]:
    """The domain types (kvm, qemu) libvirt offers for x86_64 guests."""
    import xml.etree.ElementTree as ET

    for guest in ET.fromstring(capabilities_xml).findall("guest"):
        arch = guest.find("arch")
        if arch is not None and arch.get("name") == "x86_64":
            return {d.get("type") or "" for d in arch.findall("domain")}
    return set()


def virt_type_verdict(wanted: str, offered: set[str]) -> Verdict:
    name = "virt type"
    if "qemu" not in offered and "kvm" not in offered:
        return Verdict(name, FAIL, "libvirt offers no x86_64 guests: is qemu-system-x86 installed?")
    if wanted == "kvm" and "kvm" not in offered:
        return Verdict(name, FAIL, "virt_type is kvm but libvirt offers no KVM here")
    if wanted == "auto" and "kvm" not in offered:
        return Verdict(name, WARN, "no KVM: auto means plain emulation (qemu), which is slow")
    if wanted == "qemu" and "qemu" not in offered:
        return Verdict(name, FAIL, "virt_type is qemu but libvirt offers no emulation")
    effective = "kvm" if wanted == "auto" else wanted
    return Verdict(name, OK, f"virt_type {wanted} runs guests as {effective}")


def check_hosts(session: Session) -> Iterator[Verdict]:
    """One verdict per host of the lab (answers over its URI, runs the virt type, where its
    node files go), all hosts asked at once."""
    from vnode import lab

    wanted = session.config.defaults.virt_type
    try:
        views = lab.survey(session)
    except VnodeError:
        return  # no host answers: the libvirt check above says why
    for name, view in views.items():
        yield host_verdict(name, view, wanted, session.config.paths.nodes)


def host_verdict(name: str, view: Any, wanted: str, nodes_dir: Path) -> Verdict:
    check = f"host {name}"
    if view.problem is not None:
        return Verdict(check, FAIL, f"{view.host.uri} does not answer: {view.problem}")
    virt = virt_type_verdict(wanted, domain_types(view.conn.getCapabilities()))
    if virt.status != OK:
        return Verdict(check, virt.status, virt.message)
    nodes = len(view.domains)
    return Verdict(
        check,
        OK,
        f"libvirt {_version(view.conn.getLibVersion())} at {view.host.uri}, "
        f"{view.memory_mib} MiB, {view.cpus} CPUs, {nodes} node(s); {_storage(view, nodes_dir)}",
    )


def _storage(view: Any, nodes_dir: Path) -> str:
    if view.host.pool is None:
        return f"node files in {nodes_dir}"
    try:
        pool = view.conn.storagePoolLookupByName(view.host.pool)
        pool_state = "active" if pool.isActive() else "defined, inactive (started by up)"
    except Exception:  # libvirt's "no such pool": up makes it
        pool_state = f"not there yet (up makes it at {view.host.pool_dir})"
    return f"pool {view.host.pool} {pool_state}"


def _kvm_stat() -> os.stat_result | None:
    try:
        return KVM_DEVICE.stat()
    except OSError:
        return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def kvm_device_verdict(
    st: os.stat_result | None, group_name: Callable[[int], str] = _group_name
) -> Verdict:
    name = "/dev/kvm"
    if st is None:
        return Verdict(name, OK, "absent; guests run under plain emulation")
    group = group_name(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    # Fedora ships it 0666: anyone may use KVM, which is as good as group kvm.
    if mode & 0o006 == 0o006:
        return Verdict(name, OK, f"group {group}, mode {mode:04o} (usable by everyone)")
    if group != "kvm" or mode & 0o060 != 0o060:
        return Verdict(
            name,
            WARN,
            f"is group {group} mode {mode:04o}: libvirtd re-probes QEMU on every call (each "
            "define takes 30-90 s); `chgrp kvm /dev/kvm; chmod 0660 /dev/kvm`",
        )
    return Verdict(name, OK, f"group kvm, mode {mode:04o}")


KSM = Path("/sys/kernel/mm/ksm")
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _ksm_values() -> dict[str, int] | None:
    try:
        return {
            key: int((KSM / key).read_text())
            for key in ("run", "pages_to_scan", "pages_shared", "pages_sharing")
        }
    except (OSError, ValueError):
        return None


def ksm_verdict(values: dict[str, int] | None) -> Verdict:
    """Warm clones start from the same pages; KSM merging them is what lets a pool fit."""
    name = "ksm"
    if values is None:
        return Verdict(name, WARN, "this kernel has no KSM: every warm clone's memory is its own")
    if values["run"] != 1:
        return Verdict(
            name,
            WARN,
            "off: warm clones do not share their template's memory "
            "(install/setup-host.sh turns it on; echo 1 > /sys/kernel/mm/ksm/run)",
        )
    saved = values["pages_sharing"] * PAGE_MIB
    return Verdict(
        name,
        OK,
        f"on ({values['pages_to_scan']} pages per scan): saves {saved:,.0f} MiB now "
        f"({values['pages_sharing']:,} pages merged into {values['pages_shared']:,})",
    )


SWTPM_LOCALCA = Path("/var/lib/swtpm-localca")


def _not_owned_by_tss() -> list[str]:
    """Files of swtpm's local CA that its user (tss, libvirt's default) cannot rewrite."""
    try:
        tss = pwd.getpwnam("tss").pw_uid
        entries = [SWTPM_LOCALCA, *SWTPM_LOCALCA.iterdir()]
        return [str(path) for path in entries if path.lstat().st_uid != tss]
    except (KeyError, OSError):
        return []


def firmware_verdict(support: Mapping[str, firmware.Descriptor | None]) -> Verdict:
    """UEFI nodes (`--firmware uefi|uefi-secure`) need OVMF, found through QEMU's firmware
    descriptors as libvirt finds it."""
    have = {name: found for name, found in support.items() if found is not None}
    if not have:
        return Verdict(
            "firmware",
            WARN,
            "no UEFI firmware (OVMF) described in "
            f"{' or '.join(str(d) for d in firmware.DESCRIPTOR_DIRS)}: nodes with firmware "
            "uefi or uefi-secure cannot start (install ovmf; edk2-ovmf on Fedora)",
        )
    said = "; ".join(
        f"{name}: {found.executable} ({found.name})" for name, found in sorted(have.items())
    )
    lacking = [name for name in support if name not in have]
    if lacking:
        return Verdict(
            "firmware",
            WARN,
            f"{said}; none for {', '.join(lacking)} (Secure Boot needs a build with the "
            "Microsoft keys enrolled: install ovmf; edk2-ovmf on Fedora)",
        )
    return Verdict("firmware", OK, said)


def tpm_verdict(swtpm: str | None, setup: str | None, not_tss: list[str] | None = None) -> Verdict:
    """Nodes with a TPM (`--tpm`, a lab's `tpm = true`) need swtpm, which libvirt runs as
    tss; swtpm_setup rewrites its local CA's files as that user."""
    if swtpm and setup and not_tss:
        return Verdict(
            "tpm",
            WARN,
            f"{not_tss[0]} is not owned by tss: nodes with a TPM fail in swtpm_setup "
            f"(run install/setup-host.sh, or chown -R tss:root {SWTPM_LOCALCA})",
        )
    if swtpm and setup:
        return Verdict("tpm", OK, f"swtpm at {swtpm}: nodes can have a TPM 2.0")
    missing = " and ".join(n for n, p in (("swtpm", swtpm), ("swtpm_setup", setup)) if not p)
    return Verdict(
        "tpm",
        WARN,
        f"{missing} not found: nodes with a TPM cannot start (install swtpm swtpm-tools)",
    )


def check_virtlogd(uri: str) -> Iterator[Verdict]:
    name = "virtlogd"
    if urlparse(uri).hostname:
        yield Verdict(name, WARN, f"not checked: {uri} is on another host")
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(VIRTLOGD_SOCKET))
    except OSError as exc:
        yield Verdict(
            name,
            FAIL,
            f"not answering on {VIRTLOGD_SOCKET} ({exc.strerror or exc}): nodes cannot start; "
            "`systemctl enable --now virtlogd.socket`, or without systemd `virtlogd -d`",
        )
        return
    yield Verdict(name, OK, f"answers on {VIRTLOGD_SOCKET}; consoles are captured")


# Parents known to reap exited children at once (libvirtd's QEMU processes end up with them).
PROMPT_REAPERS = frozenset({"systemd", "init", "tini", "dumb-init", "s6-svscan", "runit"})


def check_reaper(uri: str) -> Iterator[Verdict]:
    if urlparse(uri).hostname:
        return
    # The daemon that starts QEMU: virtqemud where libvirt runs as modular daemons.
    found = _process_named(("libvirtd", "virtqemud"))
    if found is None:
        yield Verdict("reaper", WARN, "not checked: no local libvirtd or virtqemud process")
        return
    daemon, pid = found
    parent = _parent_of(pid)
    parent_name = _comm(parent)
    delay = None if parent_name in PROMPT_REAPERS else _orphan_reap_delay()
    yield reaper_verdict(parent_name, parent, delay, daemon)


def reaper_verdict(
    parent_name: str, parent_pid: int, delay: float | None, daemon: str = "libvirtd"
) -> Verdict:
    """``delay``: seconds an orphan stayed a zombie (None when the parent is a known init)."""
    who = f"{daemon}'s parent {parent_name} (pid {parent_pid})"
    if delay is None or delay < 0.1:
        return Verdict("reaper", OK, f"{who} reaps exited QEMU processes at once")
    return Verdict(
        "reaper",
        WARN,
        f"{who} reaps exited processes after {delay:.1f} s, so every destroy waits that long; "
        "run libvirtd under `tini -s -- libvirtd` (make setup does)",
    )


def _process_named(names: tuple[str, ...]) -> tuple[str, int] | None:
    """The first process found (one pass over /proc) whose name is one of ``names``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (name := _comm(int(entry.name))) in names:
            return name, int(entry.name)
    return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _parent_of(pid: int) -> int:
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return int(stat_line.rsplit(")", 1)[1].split()[1])


def _orphan_reap_delay(limit: float = 3.0) -> float:
    """How long an orphaned process stays a zombie here: a double fork, then polling."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        grandchild = os.fork()
        if grandchild == 0:
            os._exit(0)
        os.write(write_end, str(grandchild).encode())
        os._exit(0)
    os.waitpid(child, 0)
    grandchild = int(os.read(read_end, 32))
    os.close(read_end)
    os.close(write_end)
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    return time.monotonic() - started


def check_network(session: Session, network: str, connected: bool) -> Iterator[Verdict]:
    """The network plugin's own diagnosis of the network nodes would join."""
    network = session.plugins.network_choice(network)
    try:
        backend = session.plugins.network_backend(
            network, session.plugin_context(connect=connected)
        )
        verdicts = backend.diagnose([])
    except VnodeError as exc:
        yield Verdict(network.partition(":")[0], FAIL, str(exc))
        return
    for verdict in verdicts:
        # "bridge input" is how a backend marks bad input for `up`; the doctor shows the thing.
        yield Verdict(verdict.check.removesuffix(" input"), verdict.status, verdict.message)


def check_images(images: Path) -> Iterator[Verdict]:
    from vnode.disks import unreadable_by_qemu

    name = "images"
    found = sorted(images.glob("*.qcow2")) if images.is_dir() else []
    if not found:
        yield Verdict(name, WARN, f"none in {images}: `vnode images build d12`")
        return
    problems = [p for path in found if (p := unreadable_by_qemu(path))]
    if problems:
        yield Verdict(name, FAIL, f"the qemu user cannot read them: {problems[0]}")
        return
    names = ", ".join(p.stem for p in found)
    yield Verdict(name, OK, f"{len(found)} in {images}, readable by the qemu user ({names})")


def check_paths(config: Config) -> Iterator[Verdict]:
    root = Path("/root")
    under = [
        f"{label} {path}"
        for label, path in (("paths.state", config.paths.state), ("images", config.paths.images))
        if path.resolve() == root or root in path.resolve().parents
    ]
    from vnode.files import untrusted

    if under:
        yield Verdict("paths", FAIL, f"{', '.join(under)} under /root, which qemu cannot read")
    elif problem := next(filter(None, map(untrusted, _trusted_paths(config))), None):
        yield Verdict("paths", FAIL, f"{problem}: vnode keeps keys and disks there")
    else:
        yield Verdict(
            "paths", OK, f"state in {config.paths.state}, outside /root, root's alone to change"
        )


def _trusted_paths(config: Config) -> list[Path]:
    return [config.paths.state, config.paths.nodes, config.paths.ssh, config.paths.images]


def check_signatures(session: Session) -> Iterator[Verdict]:
    """Whether `images fetch` can check each family's checksum file signature here."""
    import shutil

    from vnode.signatures import present

    unchecked, checked = [], []
    for catalog in session.plugins.distro_catalogs():
        latest = catalog.resolve(catalog.latest)
        if latest is None or latest.signature is None:
            continue
        configured = session.config.images.keyring_for(catalog.family)
        keys = present([configured] if configured else latest.keyrings)
        (checked if keys else unchecked).append(catalog.family)
    if (checked or unchecked) and shutil.which("gpgv") is None:
        yield Verdict("signatures", FAIL, "gpgv is not installed (apt-get install gpgv gpg)")
    elif unchecked:
        yield Verdict(
            "signatures",
            WARN,
            f"no signing key on this host for {', '.join(unchecked)}: their images are fetched "
            "on checksums alone (listed unsigned); install the distro's key package or set "
            "[images] keyring.FAMILY",
        )
    elif checked:
        yield Verdict("signatures", OK, f"checksum files checked with gpgv: {', '.join(checked)}")


def check_leftovers(session: Session, conn: Any | None) -> Iterator[Verdict]:
    """What a vnode killed mid-way (kill -9, a power cut) may have left: node directories
    without a domain, domains whose files are gone, partial downloads."""
    from vnode import hypervisor
    from vnode.nodes import leftover_dirs, leftover_host_keys

    if conn is None:
        yield Verdict("leftovers", WARN, "not checked: libvirt is unreachable")
        return
    config = session.config
    found = hypervisor.vnode_domains(conn, config.paths.nodes)
    names = {mark.name for _, mark in found}
    # A disk in the node's directory: only where the host keeps node files there (else a
    # volume of its pool).
    local_files = any(host.pool is None for host in lab_hosts(config))
    problems = [
        f"{name} (a directory, no domain)" for name in leftover_dirs(config.paths.nodes, names)
    ]
    problems += [
        f"{mark.name} (a domain, its disk gone)"
        for _, mark in found
        if local_files and mark.node_dir and not (Path(mark.node_dir) / "disk.qcow2").exists()
    ]
    if local_files:  # a node on another host has its entry here and its domain there
        problems += [
            f"{name} (a known_hosts entry, no node)"
            for name in leftover_host_keys(session.known_hosts, config.paths.nodes, names)
        ]
    parts = sorted(config.paths.images.glob("*.part")) if config.paths.images.is_dir() else []
    templates = config.paths.state / "templates"
    if templates.is_dir():
        problems += [
            f"template {path.name} (half-made: the next `template make` makes it again)"
            for path in sorted(templates.iterdir())
            if path.is_dir() and not (path / "record.json").exists()
        ]
    if problems:
        yield Verdict(
            "leftovers", WARN, f"{'; '.join(problems)} (`vnode destroy NAME` removes a node's)"
        )
    if parts:
        listed = ", ".join(p.name for p in parts)
        yield Verdict("leftovers", OK, f"partial downloads {listed}: the next fetch resumes them")
    if not problems and not parts:
        yield Verdict("leftovers", OK, "no node left half-made")


def check_plugins(session: Session) -> Iterator[Verdict]:
    infos = session.plugins.infos
    broken = [i for i in infos if i.status == "broken"]
    if broken:
        listed = "; ".join(f"{i.name} ({i.reason})" for i in broken)
        yield Verdict("plugins", FAIL, f"broken: {listed}")
    else:
        loaded = [i.name for i in infos if i.status == "ok"]
        disabled = [i.name for i in infos if i.status == "disabled"]
        also = f"; disabled: {', '.join(disabled)}" if disabled else ""
        yield Verdict("plugins", OK, f"{len(loaded)} loaded: {', '.join(loaded)}{also}")
