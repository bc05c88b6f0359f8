"""Build a bootable Debian cloud image (qcow2) from a Debian mirror.

Meant for offline labs: the only network access is to the apt mirror while
building, and the resulting guest never reaches out on its own (no apt
timers, cloud-init pinned to the NoCloud seed).  Needs root, mmdebstrap,
sfdisk, losetup, mkfs.ext4, extlinux, syslinux-common, mkfs.fat (dosfstools),
mtools and qemu-img.

The disk boots on BIOS and on UEFI alike, Secure Boot included: a GPT whose
protective MBR carries syslinux's gptmbr (BIOS: extlinux on the root
filesystem, partition 1, marked legacy-BIOS-bootable), and an EFI system
partition (15, before the root so that growpart can grow the root into the
rest of the disk) with the release's own Microsoft-signed shim as the
removable-media path EFI/BOOT/BOOTX64.EFI and Debian's signed GRUB beside it.

Imported only by the Debian plugin's image builder, when an image is built.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs

from vnode.plugin import EnvironmentProblem, UsageError, VnodeError, get_logger

log = get_logger("vnode.debian.build")

RELEASES: dict[str, str] = {
    "12": "bookworm",
    "13": "trixie",
}

PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "cloud-init",
    "openssh-server",
    "netbase",
    "iproute2",
    # fsck.ext4 for the initramfs/boot-time check; not guaranteed by minbase.
    "e2fsprogs",
    # growpart lets cloud-init grow the root partition when a VM's disk is
    # bigger than the image; without it only the (full) filesystem resizes.
    "cloud-guest-utils",
    # UEFI: the signed boot chain copied to the EFI system partition (shim
    # signed by Microsoft, GRUB and the kernel by Debian), so Secure Boot with
    # the Microsoft keys enrolled boots the image; mokutil comes with shim.
    "shim-signed",
    "grub-efi-amd64-signed",
)
# Where those packages put the signed binaries in the root filesystem.
SHIM_EFI = "usr/lib/shim/shimx64.efi.signed"
MOK_MANAGER_EFI = "usr/lib/shim/mmx64.efi.signed"
GRUB_EFI = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"

# How the guest configures its network, and which cloud-init renderer writes it:
# - "ifupdown": Debian's classic (/etc/network/interfaces), cloud-init's eni renderer;
# - "netplan": netplan YAML rendered to systemd-networkd, resolved for DNS: what Ubuntu's
#   cloud images do, and Debian's own cloud images since bookworm;
# - "networkmanager": NetworkManager keyfiles, as Fedora's cloud images.
NETWORK_STACKS: dict[str, tuple[str, ...]] = {
    "ifupdown": (
        "ifupdown",
        "isc-dhcp-client",
        # ifupdown only honours the `dns-nameservers` lines cloud-init's eni renderer
        # writes for static addresses when resolvconf is installed.
        "resolvconf",
        # cloud-init 22.4's eni renderer turns network-config `routes:` into
        # `post-up route add ...` lines (net-tools), failing silently without it.
        "net-tools",
    ),
    "netplan": ("netplan.io", "systemd-resolved"),
    "networkmanager": ("network-manager",),
}
RENDERER_OF_STACK = {"ifupdown": "eni", "netplan": "netplan", "networkmanager": "network-manager"}

# Timers that reach the network; everything else in a minbase system
# (man-db, logrotate, fstrim, e2scrub, dpkg-db-backup) is local-only.
NETWORK_TIMERS: tuple[str, ...] = ("apt-daily.timer", "apt-daily-upgrade.timer")
# e2scrub_reap cleans up LVM snapshots; there is no LVM, yet under TCG it
# costs seconds of boot.
UNNEEDED_UNITS: tuple[str, ...] = ("e2scrub_reap.service",)

# syslinux's boot code for a GPT disk's protective MBR: it starts the partition marked
# legacy-BIOS-bootable. Debian's syslinux-common, Fedora's syslinux.
MBR_CANDIDATES = (
    pathlib.Path("/usr/lib/syslinux/mbr/gptmbr.bin"),
    pathlib.Path("/usr/share/syslinux/gptmbr.bin"),
)
MBR_BIN = next((p for p in MBR_CANDIDATES if p.is_file()), MBR_CANDIDATES[0])
ESP_START = 1 << 20  # 1 MiB: conventional alignment, after the GPT
ESP_SIZE = 63 << 20  # FAT32 with 512-byte clusters; shim and GRUB take some 6 MiB
ROOT_START = ESP_START + ESP_SIZE
ESP_NUMBER, ROOT_NUMBER = 15, 1
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
FS_LABEL = "vnode-root"
ESP_LABEL = "VNODE-ESP"


class BuildError(VnodeError):
    """A build step failed; the message carries the tool's own last lines."""


# --------------------------------------------------------------------------
# Mirror discovery from the host's apt configuration
# --------------------------------------------------------------------------


@attrs.frozen
class AptSource:
    types: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()


def _parse_deb822(text: str) -> list[AptSource]:
    sources: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:  # continuation line
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if fields.get("uris"):
            sources.append(
                AptSource(
                    tuple(fields.get("types", "").split()),
                    tuple(fields["uris"].split()),
                    tuple(fields.get("suites", "").split()),
                )
            )
    return sources


def _parse_one_line(text: str) -> list[AptSource]:
    sources: list[AptSource] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        if words[1].startswith("["):  # skip "[arch=... signed-by=...]" options
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            words = [words[0], *words[end + 1 :]]
        if len(words) >= 3:
            sources.append(AptSource((words[0],), (words[1],), (words[2],)))
    return sources


def _host_apt_sources(root: pathlib.Path = pathlib.Path("/")) -> list[AptSource]:
    apt = root / "etc/apt"
    sources: list[AptSource] = []
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        sources += _parse_deb822(path.read_text(errors="replace"))
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            sources += _parse_one_line(path.read_text(errors="replace"))
    return [s for s in sources if "deb" in s.types]


def _is_main_archive_suite(suite: str) -> bool:
    # "bookworm-security", "bookworm-updates", "bookworm/updates" live in
    # other archives (or are partial), so they say nothing about where the
    # release itself is mirrored.
    return "-" not in suite and "/" not in suite


def find_host_mirror(suite: str, root: pathlib.Path = pathlib.Path("/")) -> str | None:
    """Mirror URL from the host's apt config: the entry carrying `suite`
    itself, else any main-archive entry (a bookworm host building trixie)."""
    sources = _host_apt_sources(root)
    for src in sources:
        if suite in src.suites:
            return src.uris[0].rstrip("/")
    for src in sources:
        if any(_is_main_archive_suite(s) for s in src.suites):
            return src.uris[0].rstrip("/")
    return None


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs: Any) -> str:
    """Run a command, returning stdout; on failure raise with its stderr so
    the caller sees why (mmdebstrap/sfdisk errors are otherwise lost)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-30:])
        raise BuildError(f"{cmd[0]} failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("building an image needs root (loop devices, mount): run as root")
    tools = (
        "mmdebstrap",
        "sfdisk",
        "losetup",
        "mkfs.ext4",
        "extlinux",
        "mkfs.fat",
        "mcopy",
        "mmd",
        "qemu-img",
        "tar",
    )
    missing = [t for t in tools if shutil.which(t) is None]
    if not MBR_BIN.is_file():
        missing.append(f"{MBR_BIN} (syslinux-common, or Fedora's syslinux)")
    if missing:
        raise EnvironmentProblem(
            "missing build tools: " + ", ".join(missing) + " (install/setup-host.sh installs them)"
        )


def _write_file(path: pathlib.Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


# --------------------------------------------------------------------------
# Build steps
# --------------------------------------------------------------------------


def _bootstrap(suite: str, mirror: str, tarball: pathlib.Path, stack: str) -> None:
    log.info("bootstrapping with mmdebstrap (a few minutes)", suite=suite, mirror=mirror)
    # mmdebstrap stages the chroot in $TMPDIR; keep it next to the output so
    # a small /tmp does not matter.
    env = {**os.environ, "TMPDIR": str(tarball.parent)}
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--components=main",
            "--include=" + ",".join((*PACKAGES, *NETWORK_STACKS[stack])),
            suite,
            str(tarball),
            mirror,
        ],
        env=env,
    )


def partition_script(raw: pathlib.Path, size: int) -> str:
    """sfdisk's input for the disk: the EFI system partition first on the disk (numbered 15),
    the root (numbered 1, legacy-BIOS-bootable) in all the rest."""
    sector = 512
    return (
        "label: gpt\n"
        f"{raw}{ESP_NUMBER} : start={ESP_START // sector}, size={ESP_SIZE // sector}, "
        f'type={ESP_TYPE}, name="EFI system"\n'
        f"{raw}{ROOT_NUMBER} : start={ROOT_START // sector}, type={LINUX_TYPE}, "
        f'attrs="LegacyBIOSBootable", name="{FS_LABEL}"\n'
    )


def _create_disk(raw: pathlib.Path, size_gb: int) -> tuple[int, int]:
    """Sparse raw disk, partitioned; returns the root partition's (offset, size) in bytes."""
    with raw.open("wb") as f:
        f.truncate(size_gb << 30)
    _run(["sfdisk", "--quiet", str(raw)], input=partition_script(raw, size_gb << 30))
    table = json.loads(_run(["sfdisk", "--json", str(raw)]))["partitiontable"]
    sector = table.get("sectorsize", 512)
    root = next(p for p in table["partitions"] if p["node"] == f"{raw}{ROOT_NUMBER}")
    return root["start"] * sector, root["size"] * sector


@contextlib.contextmanager
def _loop_device(raw: pathlib.Path, offset: int, size: int) -> Iterator[str]:
    # No udev here, so a partitioned loop would have no /dev/loopNp1 node:
    # map the partition alone through an offset loop instead.
    dev = _run(
        ["losetup", "--find", "--show", "-o", str(offset), "--sizelimit", str(size), str(raw)]
    ).strip()
    try:
        yield dev
    finally:
        _run(["losetup", "-d", dev])


@contextlib.contextmanager
def _mounted(dev: str, mnt: pathlib.Path) -> Iterator[pathlib.Path]:
    mnt.mkdir(exist_ok=True)
    _run(["mount", dev, str(mnt)])
    try:
        yield mnt
    finally:
        os.sync()
        try:
            _run(["umount", str(mnt)])
        except BuildError:
            # Something still holds the mount (e.g. a stray process from a
            # failed step): detach it lazily rather than leak it.
            _run(["umount", "--lazy", str(mnt)])


def _make_filesystem(dev: str, fs_uuid: str) -> None:
    # syslinux 6.04 cannot reliably read ext4 with the 64bit feature; a few
    # GiB root never needs it (resize2fs still grows to 16 TiB without).
    _run(["mkfs.ext4", "-q", "-O", "^64bit", "-L", FS_LABEL, "-U", fs_uuid, dev])


def _extract(tarball: pathlib.Path, root: pathlib.Path) -> None:
    _run(
        [
            "tar",
            "--extract",
            "--file",
            str(tarball),
            "--directory",
            str(root),
            "--numeric-owner",
            "--preserve-permissions",
            "--xattrs",
            "--xattrs-include=*",
        ]
    )


def _ensure_kernel_links(root: pathlib.Path) -> None:
    # extlinux.conf points at /vmlinuz and /initrd.img so kernel upgrades
    # inside the guest keep booting; create them if the release's
    # linux-base did not.
    for name in ("vmlinuz", "initrd.img"):
        link = root / name
        if link.exists():
            continue
        found = sorted(root.glob(f"boot/{name}-*"))
        if not found:
            raise BuildError(f"no /boot/{name}-* in the root filesystem")
        if link.is_symlink():
            link.unlink()
        link.symlink_to(found[-1].relative_to(root))


KERNEL_ARGS = "ro console=tty0 console=ttyS0,115200"


def _install_bootloader(root: pathlib.Path, fs_uuid: str) -> None:
    _ensure_kernel_links(root)
    # ttyS0 last so it becomes /dev/console: boot logs land on the serial
    # port the labs capture; getty then runs on both consoles.
    _write_file(
        root / "boot/extlinux/extlinux.conf",
        "SERIAL 0 115200\n"
        "DEFAULT debian\n"
        "PROMPT 0\n"
        "TIMEOUT 1\n"
        "LABEL debian\n"
        "  LINUX /vmlinuz\n"
        "  INITRD /initrd.img\n"
        f"  APPEND root=UUID={fs_uuid} {KERNEL_ARGS}\n",
    )
    _run(["extlinux", "--install", str(root / "boot/extlinux")])


def grub_config(fs_uuid: str) -> str:
    """The GRUB configuration on the EFI system partition: Debian's signed GRUB reads
    grub.cfg beside itself when no /boot/grub exists; it boots the same kernel as extlinux,
    through the same /vmlinuz link (a kernel upgrade in the guest keeps booting)."""
    return (
        "set timeout=0\n"
        f"search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
        f"linux /vmlinuz root=UUID={fs_uuid} {KERNEL_ARGS}\n"
        "initrd /initrd.img\n"
        "boot\n"
    )


def _make_esp(root: pathlib.Path, esp: pathlib.Path, fs_uuid: str) -> None:
    """The EFI system partition as a FAT image of its own (mtools: no vfat mount needed).

    shim is the removable-media path every UEFI boots without a boot entry; it loads
    grubx64.efi from its own directory. No fallback (fbx64.efi) is installed: it would
    write boot entries and reset the machine on first boot.
    """
    # The volume id from the root's UUID: the same build inputs give the same ESP.
    volume_id = fs_uuid.replace("-", "")[:8]
    fat = ["mkfs.fat", "-C", "-F", "32", "-s", "1", "-n", ESP_LABEL, "-i", volume_id]
    _run([*fat, str(esp), str(ESP_SIZE // 1024)])
    config = esp.with_name("grub.cfg")
    config.write_text(grub_config(fs_uuid))
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    _run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], env=env)
    files = [(root / SHIM_EFI, "BOOTX64.EFI"), (root / GRUB_EFI, "grubx64.efi")]
    for source, _ in files:
        if not source.is_file():
            raise BuildError(f"/{source.relative_to(root)} is missing from the root filesystem")
    # MokManager only runs when a key enrolment is pending; shim boots without it.
    if (root / MOK_MANAGER_EFI).is_file():
        files.append((root / MOK_MANAGER_EFI, "mmx64.efi"))
    for source, name in [*files, (config, "grub.cfg")]:
        _run(["mcopy", "-i", str(esp), str(source), f"::/EFI/BOOT/{name}"], env=env)


def _write_esp(raw: pathlib.Path, esp: pathlib.Path) -> None:
    with raw.open("r+b") as disk, esp.open("rb") as image:
        disk.seek(ESP_START)
        shutil.copyfileobj(image, disk, 1 << 20)


def _write_mbr(raw: pathlib.Path) -> None:
    # Only the 440 bytes of boot code: the rest of sector 0 is the disk
    # signature and the protective partition sfdisk wrote.
    code = MBR_BIN.read_bytes()[:440]
    with raw.open("r+b") as f:
        f.write(code)


def _enable_units(root: pathlib.Path, units: tuple[str, ...]) -> None:
    # What `systemctl enable` does for units wanted by multi-user.target, without systemd.
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in units:
        link = wants / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to(f"/usr/lib/systemd/system/{unit}")


def _mask_units(root: pathlib.Path, units: tuple[str, ...]) -> None:
    system = root / "etc/systemd/system"
    system.mkdir(parents=True, exist_ok=True)
    for unit in units:
        link = system / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")


def _customize(root: pathlib.Path, fs_uuid: str, stack: str = "ifupdown") -> None:
    """Turn the bootstrap into a clonable, quiet, cloud-init driven image."""
    # cloud-init picks the first renderer it finds available; name the stack's own, so the
    # image's network is configured the way it was built for (and nothing else).
    renderer = RENDERER_OF_STACK[stack]
    _write_file(
        root / "etc/cloud/cloud.cfg.d/92-vnode-network.cfg",
        f"system_info:\n  network:\n    renderers: [{renderer}]\n",
    )
    if stack == "netplan":
        _enable_units(root, ("systemd-networkd.service", "systemd-resolved.service"))
    _write_file(root / "etc/fstab", f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    # mmdebstrap copies the build host's hostname and resolver; neither
    # belongs in a VM (cloud-init sets the hostname, DHCP/resolvconf DNS).
    _write_file(root / "etc/hostname", "debian\n")
    _write_file(
        root / "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
    )
    resolv = root / "etc/resolv.conf"
    if not resolv.is_symlink():  # resolvconf manages it via a symlink
        _write_file(resolv, "")
    # Only the seed ISO: probing other datasources wastes boot time and
    # would try link-local metadata services.
    _write_file(
        root / "etc/cloud/cloud.cfg.d/90-vnode-datasource.cfg",
        "datasource_list: [ NoCloud, None ]\n",
    )
    # Offline labs: never touch the mirror at boot.  cloud-init's default
    # locale (en_US.UTF-8) is not generated in a minbase system, so its
    # locale module fails and marks the boot as errored; C.UTF-8 is built in.
    _write_file(
        root / "etc/cloud/cloud.cfg.d/91-vnode-defaults.cfg",
        "package_update: false\npackage_upgrade: false\nlocale: C.UTF-8\n",
    )
    _mask_units(root, NETWORK_TIMERS + UNNEEDED_UNITS)
    _write_file(
        root / "etc/ssh/sshd_config.d/50-vnode.conf",
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
    )
    _lock_root(root)
    _make_unique_per_clone(root)


def _lock_root(root: pathlib.Path) -> None:
    # "*" rather than "!": no password can ever match, yet sshd never treats
    # the account as locked, so key login keeps working whatever UsePAM says.
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        parts = line.split(":")
        if parts[0] == "root":
            parts[1] = "*"
            lines[i] = ":".join(parts)
    shadow.write_text("\n".join(lines) + "\n")


def _make_unique_per_clone(root: pathlib.Path) -> None:
    # Every VM must get its own SSH host keys (cloud-init generates them on
    # first boot) and its own machine-id (systemd generates an empty one).
    for key in glob.glob(str(root / "etc/ssh/ssh_host_*")):
        os.unlink(key)
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()


def _convert(raw: pathlib.Path, dest: pathlib.Path) -> None:
    partial = dest.with_name(dest.name + ".partial")
    log.info("converting to qcow2", dest=str(dest))
    try:
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(partial)])
        partial.chmod(0o644)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def _populate(
    raw: pathlib.Path, tarball: pathlib.Path, work: pathlib.Path, size_gb: int, stack: str
) -> None:
    offset, size = _create_disk(raw, size_gb)
    fs_uuid = str(uuid.uuid4())
    with _loop_device(raw, offset, size) as dev:
        _make_filesystem(dev, fs_uuid)
        with _mounted(dev, work / "mnt") as root:
            log.info("extracting root filesystem")
            _extract(tarball, root)
            _customize(root, fs_uuid, stack)
            log.info("installing extlinux (BIOS) and shim with GRUB (UEFI)")
            _install_bootloader(root, fs_uuid)
            _make_esp(root, work / "esp.img", fs_uuid)
    _write_esp(raw, work / "esp.img")
    _write_mbr(raw)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def resolve_suite(release: str) -> str:
    if release in RELEASES:
        return RELEASES[release]
    if release in RELEASES.values():
        return release
    raise UsageError(f"unknown Debian release {release!r}; known: {', '.join(RELEASES)}")


def build_debian_image(
    dest: pathlib.Path,
    release: str = "12",
    mirror: str | None = None,
    size_gb: int = 3,
    network_stack: str = "ifupdown",
) -> pathlib.Path:
    """Build a Debian `release` cloud image into `dest` (qcow2) and return it; its network is
    configured by ``network_stack`` (see NETWORK_STACKS)."""
    dest = pathlib.Path(dest).absolute()
    suite = resolve_suite(release)
    if network_stack not in NETWORK_STACKS:
        raise UsageError(
            f"unknown network stack {network_stack!r}; known: {', '.join(NETWORK_STACKS)}"
        )
    _check_prerequisites()
    mirror = mirror or find_host_mirror(suite)
    if not mirror:
        raise UsageError(
            "no Debian mirror in the host's apt sources: set apt_mirror in the [debian] section"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Work next to dest: /tmp may be a small tmpfs, and dest's filesystem
    # has to hold the result anyway.
    work = pathlib.Path(tempfile.mkdtemp(prefix=".debian-build-", dir=dest.parent))
    try:
        tarball = work / "rootfs.tar"
        _bootstrap(suite, mirror, tarball, network_stack)
        raw = work / "disk.raw"
        _populate(raw, tarball, work, size_gb, network_stack)
        _convert(raw, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("image built", dest=str(dest), seconds=round(time.monotonic() - started))
    return dest
