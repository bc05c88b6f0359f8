#!/bin/sh
# One-time (and idempotent) host set-up for vnode: packages, libvirt's daemons, KVM access.
# Safe to run again: it only installs what is missing and starts what is not running.
#
#   install/setup-host.sh          set this host up (as root)
#   install/setup-host.sh --plan   print what it would run here, run nothing
#
# Hosts: Fedora and RHEL-like (dnf, systemd, libvirt's modular daemons through their sockets,
# /dev/kvm left as the distro ships it), Debian and Ubuntu (apt; systemd, or no init at all as
# in containers and CI, where the daemons are started here under a reaper).
# For tests and previews: VNODE_OS_RELEASE (default /etc/os-release) and VNODE_INIT
# (systemd|none, default: what this host runs) describe another host.
set -eu

PLAN=false
[ "${1:-}" = "--plan" ] && PLAN=true

OS_RELEASE=${VNODE_OS_RELEASE:-/etc/os-release}
if [ -n "${VNODE_INIT:-}" ]; then
    INIT=$VNODE_INIT
elif [ -d /run/systemd/system ]; then
    INIT=systemd
else
    INIT=none
fi

# What vnode needs, per package family. Building Debian images (vnode images build) needs
# mmdebstrap, extlinux, sfdisk, mkfs and (the EFI system partition) dosfstools and mtools;
# UEFI nodes need OVMF (ovmf, edk2-ovmf); libvirt-python is built in vnode's venv (gcc,
# pkg-config and libvirt's headers).
APT_PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients dnsmasq-base
iptables openssh-client gpgv gpg mmdebstrap extlinux syslinux-common fdisk e2fsprogs
libvirt-dev pkg-config gcc python3-venv tini procps swtpm swtpm-tools ovmf dosfstools mtools"
DNF_PACKAGES="qemu-kvm-core qemu-img libvirt-daemon-driver-qemu libvirt-daemon-driver-network
libvirt-daemon-driver-storage-core libvirt-daemon-config-network libvirt-client dnsmasq
openssh-clients gnupg2 mmdebstrap syslinux syslinux-extlinux util-linux e2fsprogs
libvirt-devel pkgconf-pkg-config gcc python3-devel procps-ng
policycoreutils-python-utils swtpm swtpm-tools edk2-ovmf dosfstools mtools"
# libvirt's modular daemons (Fedora's default since 35): each started by its socket, so
# nothing runs until vnode connects. The monolithic libvirtd is never started there.
MODULAR_SOCKETS="virtqemud.socket virtnetworkd.socket virtstoraged.socket virtlogd.socket"

say() { printf 'setup: %s\n' "$*"; }

# Run a command, or print it in plan mode.
run() {
    if $PLAN; then
        echo "$*"
    else
        "$@"
    fi
}

os_value() {
    [ -r "$OS_RELEASE" ] || return 0
    sed -n "s/^$1=//p" "$OS_RELEASE" | tr -d '"' | head -n 1
}

host_family() {
    for word in $(os_value ID) $(os_value ID_LIKE); do
        case "$word" in
            fedora | rhel | centos) echo dnf; return ;;
            debian | ubuntu) echo apt; return ;;
        esac
    done
    echo unknown
}

# True if the process's parent is a prompt reaper: PID 1 being a real init, or tini.
# The same names as `vnode doctor`'s reaper check (PROMPT_REAPERS in core/doctor.py).
under_reaper() {
    parent=$(ps -o ppid= -p "$1" | tr -d ' ')
    case "$(ps -o comm= -p "$parent")" in
        systemd | init | tini | dumb-init | s6-svscan | runit) return 0 ;;
    esac
    return 1
}

missing_packages() {
    for pkg in $2; do
        case "$1" in
            apt) dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" ;;
            dnf) rpm -q "$pkg" >/dev/null 2>&1 ;;
        esac || printf ' %s' "$pkg"
    done
}

install_packages() {
    family=$1
    wanted=$2
    if $PLAN; then
        missing=" $(echo $wanted)"  # the whole list: the plan describes a fresh host
    else
        missing=$(missing_packages "$family" "$wanted")
    fi
    [ -n "$missing" ] || return 0
    $PLAN || say "installing$missing"
    case "$family" in
        apt)
            run apt-get update -qq
            # shellcheck disable=SC2086
            run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends $missing
            ;;
        dnf)
            # shellcheck disable=SC2086
            run dnf install -y -q $missing
            ;;
    esac
}

start_modular_daemons() {
    # shellcheck disable=SC2086
    run systemctl enable --now $MODULAR_SOCKETS
}

# Only this host's daemons: a libvirtd in other namespaces (a second hypervisor host in
# tests, a container's) is not this host's and is never restarted here.
THIS_HOST="--ns $$ --nslist mnt,net"

start_daemons_without_init() {
    # Without udev, /dev/kvm stays root:root 0600: libvirtd then finds KVM unusable for the
    # qemu user and re-probes QEMU on every call (a define takes 30-90 s). udev's rule fixes
    # it on hosts with an init; here it is done by hand.
    if [ -c /dev/kvm ] || $PLAN; then
        run chgrp kvm /dev/kvm
        run chmod 0660 /dev/kvm
    fi
    if $PLAN; then
        echo "virtlogd -d"
        echo "setsid tini -s -- libvirtd"
        return
    fi
    # virtlogd captures consoles.
    pgrep $THIS_HOST -x virtlogd >/dev/null || { say "starting virtlogd"; virtlogd -d; }
    # libvirtd daemonizes QEMU, so an exited QEMU is reaped by the nearest subreaper, else by
    # PID 1. A container's PID 1 may reap late (seen here: 1.6 s), and libvirt waits for
    # that on every destroy. `tini -s` as libvirtd's parent reaps at once, as systemd does.
    libvirtd_pid=$(pgrep $THIS_HOST -x libvirtd | head -n 1 || true)
    if [ -n "$libvirtd_pid" ] && ! under_reaper "$libvirtd_pid"; then
        say "restarting libvirtd under a reaper (running domains keep running)"
        kill "$libvirtd_pid"
        while kill -0 "$libvirtd_pid" 2>/dev/null; do sleep 0.1; done
        libvirtd_pid=""
    fi
    if [ -z "$libvirtd_pid" ]; then
        say "starting libvirtd"
        setsid tini -s -- libvirtd </dev/null >>/var/log/libvirt/libvirtd.out 2>&1 &
    fi
}

# The user who ran `sudo` may use qemu:///system through the libvirt group.
add_user_to_groups() {
    user=${SUDO_USER:-}
    [ -n "$user" ] && [ "$user" != root ] || return 0
    run usermod -a -G libvirt,kvm "$user"
}

# libvirt runs swtpm as the tss user, and swtpm_setup writes the local CA's serial and lock
# under /var/lib/swtpm-localca. A libvirtd that started before swtpm's package made that user
# ran swtpm as root and left root's files there; every TPM node after that fails in
# swtpm_setup ("Need read/write rights on ... for user tss"). They are given back to tss.
# Nothing to do on a fresh host, so the plan does not show it.
give_swtpm_ca_to_tss() {
    dir=/var/lib/swtpm-localca
    $PLAN && return 0
    [ -d "$dir" ] && id tss >/dev/null 2>&1 || return 0
    if [ -n "$(find "$dir" ! -user tss -print -quit)" ]; then
        say "giving $dir back to tss (root-owned files there stop swtpm_setup)"
        chown -R tss:root "$dir"
    fi
}

# Warm clones start from the same template pages: KSM merges them (QEMU marks guest memory
# mergeable by default), which is what lets a whole pool fit one host (docs/warm-clones.md).
# The kernel's default scan rate (100 pages per 20 ms) needs minutes to merge a pool; 1000
# merges a clone's ~300 MiB in seconds for a few percent of one core. VNODE_KSM=off leaves it.
KSM=/sys/kernel/mm/ksm
KSM_PAGES_TO_SCAN=1000
enable_ksm() {
    [ "${VNODE_KSM:-on}" = off ] && return 0
    if [ "$INIT" = systemd ]; then
        # A tmpfiles.d entry, so that it holds after a reboot too.
        conf=/etc/tmpfiles.d/vnode-ksm.conf
        if $PLAN; then
            echo "write $conf (run 1, pages_to_scan $KSM_PAGES_TO_SCAN)"
            echo "systemd-tmpfiles --create $conf"
            return
        fi
        [ -d "$KSM" ] || return 0
        printf 'w %s/run - - - - 1\nw %s/pages_to_scan - - - - %s\n' \
            "$KSM" "$KSM" "$KSM_PAGES_TO_SCAN" >"$conf"
        systemd-tmpfiles --create "$conf"
        return
    fi
    if $PLAN; then
        echo "echo 1 > $KSM/run"
        echo "echo $KSM_PAGES_TO_SCAN > $KSM/pages_to_scan"
        return
    fi
    [ -w "$KSM/run" ] || return 0
    if [ "$(cat "$KSM/run")" = 0 ]; then
        say "enabling KSM (warm clones share their template's memory)"
        echo 1 >"$KSM/run"
    fi
    [ "$(cat "$KSM/pages_to_scan")" -ge "$KSM_PAGES_TO_SCAN" ] \
        || echo "$KSM_PAGES_TO_SCAN" >"$KSM/pages_to_scan"
}

wait_for_libvirt() {
    if $PLAN; then
        echo "virsh -c qemu:///system version"
        return
    fi
    tries=0
    until virsh -q -c qemu:///system version >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 30 ]; then
            echo "setup: libvirt does not answer on qemu:///system" >&2
            exit 1
        fi
        sleep 1
    done
}

if ! $PLAN && [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (it installs packages and starts libvirt's daemons)" >&2
    exit 1
fi

family=$(host_family)
case "$family" in
    dnf)
        if [ "$INIT" != systemd ]; then
            echo "setup: a Fedora-like host without systemd is not supported" >&2
            exit 1
        fi
        install_packages dnf "$DNF_PACKAGES"
        start_modular_daemons
        # /dev/kvm: Fedora's udev rule makes it 0666; never tightened here.
        ;;
    apt)
        install_packages apt "$APT_PACKAGES"
        if [ "$INIT" = systemd ]; then
            run systemctl enable --now virtlogd.socket libvirtd.service
        else
            start_daemons_without_init
        fi
        ;;
    *)
        echo "setup: unsupported host ($(os_value PRETTY_NAME)): install qemu and libvirt, then start them" >&2
        exit 1
        ;;
esac
add_user_to_groups
give_swtpm_ca_to_tss
enable_ksm
wait_for_libvirt
# Consoles go to /var/log/libvirt/qemu (see [console]), which libvirt's packages make and
# label for virtlogd on SELinux hosts: nothing vnode keeps needs a label of its own.
run install -d -m 0755 /var/lib/vnode /var/lib/vnode/images /var/lib/vnode/nodes
$PLAN || say "host ready"
