#!/bin/sh
# vnode's guest-network plugin: a warm clone's network configuration, persisted in whatever
# network stack the guest uses, DHCP started there, and the resolver set. Run by the clone's
# apply script (vnode's templates/warm-apply.sh) once sshd runs, as `sh persist DIR NIC`:
# DIR holds the files the plugin wrote for this clone (mode, address, gateway, resolv.conf,
# and one file per stack), NIC is the interface with the clone's MAC, already addressed
# when the address is static. Only POSIX sh and what each stack itself ships.
set -eu
d=$1
nic=$2
get() { IFS= read -r "$1" <"$d/$2" || true; }
copy() { while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done <"$1" >"$2"; }
say() { echo "vnode-identity: $*" >/dev/ttyS0 2>/dev/null || true; }
get mode mode

# netplan's and NetworkManager's tools take seconds to start under emulation: the apply
# script runs this after sshd, so SSH does not wait for them.
if [ -d /etc/netplan ] && command -v netplan >/dev/null; then
    stack=netplan
    copy "$d/netplan.yaml" /etc/netplan/90-vnode.yaml
    chmod 0600 /etc/netplan/90-vnode.yaml
    netplan apply || say "netplan apply failed"
elif command -v nmcli >/dev/null && nmcli -t general status >/dev/null 2>&1; then
    stack=networkmanager
    umask 077
    copy "$d/nm.nmconnection" /etc/NetworkManager/system-connections/vnode0.nmconnection
    umask 022
    nmcli connection reload
    nmcli connection up vnode0 ifname "$nic" >/dev/null || say "nmcli up failed"
elif [ -e /run/systemd/netif/state ]; then # systemd-networkd runs (no systemctl needed)
    stack=networkd
    copy "$d/networkd.network" /etc/systemd/network/10-vnode.network
    networkctl reload
elif [ -d /etc/network ] && command -v ifup >/dev/null; then
    stack=ifupdown
    [ -d /etc/network/interfaces.d ] || mkdir /etc/network/interfaces.d
    # The file names the interface as @NIC@: the kernel named it only now.
    while IFS= read -r line || [ -n "$line" ]; do
        while :; do
            case $line in
            *@NIC@*) line="${line%%@NIC@*}$nic${line#*@NIC@}" ;;
            *) break ;;
            esac
        done
        printf '%s\n' "$line"
    done <"$d/ifupdown" >/etc/network/interfaces.d/vnode0
    # Static: configured by hand already; ifupdown takes over from the next boot on.
    [ "$mode" = static ] || ifup "$nic" || say "ifup $nic failed"
else
    stack=none
    say "no network stack found to keep the configuration in"
fi

# The resolver last: SSH does not need it, and resolvconf's hooks took ~8 s under load.
# netplan and NetworkManager set it from their own files.
if [ "$mode" = static ] && [ -s "$d/resolv.conf" ]; then
    case $stack in
    netplan | networkmanager) ;;
    *)
        if command -v resolvconf >/dev/null; then
            resolvconf -a "$nic.vnode" <"$d/resolv.conf" || true
        else
            copy "$d/resolv.conf" /etc/resolv.conf
        fi
        ;;
    esac
fi
