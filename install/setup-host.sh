#!/bin/sh
# One-time (and idempotent) host set-up for vnode: packages, daemons, /dev/kvm access.
# Safe to run again: it only installs what is missing and starts what is not running.
set -eu

PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients dnsmasq-base
iptables openssh-client mmdebstrap extlinux syslinux-common fdisk e2fsprogs
libvirt-dev pkg-config gcc python3-venv tini procps"

say() { printf 'setup: %s\n' "$*"; }

# True if the process's parent is a prompt reaper: PID 1 being a real init, or tini.
# The same names as `vnode doctor`'s reaper check (PROMPT_REAPERS in core/doctor.py).
under_reaper() {
    parent=$(ps -o ppid= -p "$1" | tr -d ' ')
    case "$(ps -o comm= -p "$parent")" in
        systemd | init | tini | dumb-init | s6-svscan | runit) return 0 ;;
    esac
    return 1
}

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (it installs packages and starts libvirtd)" >&2
    exit 1
fi

missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    say "installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Without udev, /dev/kvm stays root:root 0600: libvirtd then finds KVM unusable for the qemu
# user and re-probes QEMU on every call (a define takes 30-90 s). udev's usual rule fixes it.
if [ -c /dev/kvm ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

if [ -d /run/systemd/system ]; then
    systemctl start virtlogd libvirtd
else
    # No systemd (containers, CI): start the daemons ourselves. virtlogd captures consoles.
    pgrep -x virtlogd >/dev/null || { say "starting virtlogd"; virtlogd -d; }
    # libvirtd daemonizes QEMU, so an exited QEMU is reaped by the nearest subreaper, else by
    # PID 1. A container's PID 1 may reap late (seen here: 1.6 s), and libvirt waits for
    # that on every destroy. `tini -s` as libvirtd's parent reaps at once, as systemd does.
    libvirtd_pid=$(pgrep -x libvirtd | head -n 1 || true)
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
fi

tries=0
until virsh -q -c qemu:///system version >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 30 ]; then
        echo "setup: libvirtd does not answer on qemu:///system" >&2
        exit 1
    fi
    sleep 1
done

install -d -m 0755 /var/lib/vnode /var/lib/vnode/images /var/lib/vnode/nodes
say "host ready"
