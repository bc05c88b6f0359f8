#!/bin/sh
# vnode warm clone: make this restored copy of a template a machine of its own.
# Shipped on the clone's identity disk (a tar archive) and run by the template's agent with
# the directory holding the clone's values, one file each (no value is ever parsed as shell).
# Only POSIX sh, coreutils, util-linux's mount and iproute2: what every stock cloud image has.
set -eu
d=$1
v() { cat "$d/$1"; }
say() { echo "vnode-identity: $*" >/dev/ttyS0 2>/dev/null || true; }

# The wall clock first: the guest's clock still says when the template was saved. QEMU's
# RTC follows the host's clock across a restore; it counts whole seconds, so take the
# middle of the current one.
if [ -r /sys/class/rtc/rtc0/since_epoch ]; then
    date -u -s "@$(cat /sys/class/rtc/rtc0/since_epoch).5" >/dev/null
fi

# Entropy the host drew for this clone, mixed into the kernel's pool (the VM generation ID
# changing already made a vmgenid-aware kernel reseed).
cat "$d/random-seed" >/dev/urandom
# Writing mixes the bytes in but does not reseed at once; RNDRESEEDCRNG does (root only).
# Every cloud-init image has python3; where it is missing the kernel reseeds on its own
# schedule (and from the VM generation ID where its vmgenid driver is built in).
python3 -c 'import fcntl, os; fcntl.ioctl(os.open("/dev/urandom", os.O_WRONLY), 0x5207)' \
    2>/dev/null || say "could not reseed the CRNG at once"

# machine-id, and a boot ID of its own: the kernel made boot_id once, before the template
# was saved, and offers no way to renew it short of a reboot; readers see the clone's.
old_id=$(cat /etc/machine-id 2>/dev/null || true)
new_id=$(v machine-id)
echo "$new_id" >/etc/machine-id
# journald keeps writing under the template's machine-id directory until it restarts, and
# restarting it stalls every process that logs (sshd's handshakes too) for seconds; a link
# lets journalctl find the journal under the new id meanwhile.
for journal in /var/log/journal /run/log/journal; do
    if [ -n "$old_id" ] && [ -d "$journal/$old_id" ] && [ ! -e "$journal/$new_id" ]; then
        ln -s "$old_id" "$journal/$new_id"
    fi
done
mkdir -p /run/vnode
cp "$d/boot-id" /run/vnode/boot_id
mount --bind /run/vnode/boot_id /proc/sys/kernel/random/boot_id

# Name.
name=$(v hostname)
fqdn=$(v fqdn)
hostname "$name"
echo "$name" >/etc/hostname
if [ -f /etc/hosts ]; then
    grep -v '^127\.0\.1\.1[[:space:]]' /etc/hosts >/etc/hosts.vnode || true
    if [ "$fqdn" = "$name" ]; then
        echo "127.0.1.1 $name" >>/etc/hosts.vnode
    else
        echo "127.0.1.1 $fqdn $name" >>/etc/hosts.vnode
    fi
    mv /etc/hosts.vnode /etc/hosts
fi

# Root logs in with the user's key only; the host key vnode generated and trusts.
mkdir -p -m 0700 /root/.ssh
install -m 0600 "$d/authorized_keys" /root/.ssh/authorized_keys
rm -f /etc/ssh/ssh_host_*
install -m 0600 "$d/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$d/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub

# The NIC was hot-plugged with the clone's MAC; find it by that MAC.
mac=$(v mac)
nic=
i=0
while [ -z "$nic" ] && [ $i -lt 200 ]; do
    for path in /sys/class/net/*; do
        [ "$(cat "$path/address" 2>/dev/null)" = "$mac" ] && nic=${path##*/}
    done
    [ -n "$nic" ] || { sleep 0.05; i=$((i + 1)); }
done
[ -n "$nic" ] || { say "no NIC with MAC $mac"; exit 1; }
udevadm settle -t 5 || true
for path in /sys/class/net/*; do  # udev may have renamed it meanwhile
    [ "$(cat "$path/address" 2>/dev/null)" = "$mac" ] && nic=${path##*/}
done

mode=$(v net/mode)
if [ "$mode" = static ]; then
    addr=$(v net/address)
    gateway=$(v net/gateway)
    ip link set dev "$nic" up
    ip address add "$addr" dev "$nic"
    [ -z "$gateway" ] || ip route add default via "$gateway" dev "$nic"
fi
# Persist the configuration for later boots, in whatever the image uses, and start DHCP.
if [ -d /etc/netplan ] && command -v netplan >/dev/null; then
    cp "$d/net/netplan.yaml" /etc/netplan/90-vnode.yaml
    chmod 0600 /etc/netplan/90-vnode.yaml
    netplan apply || say "netplan apply failed"
elif command -v nmcli >/dev/null && nmcli -t general status >/dev/null 2>&1; then
    install -m 0600 "$d/net/nm.nmconnection" /etc/NetworkManager/system-connections/vnode0.nmconnection
    nmcli connection reload
    nmcli connection up vnode0 ifname "$nic" >/dev/null || say "nmcli up failed"
elif systemctl -q is-active systemd-networkd.service 2>/dev/null; then
    cp "$d/net/networkd.network" /etc/systemd/network/10-vnode.network
    networkctl reload
elif command -v ifup >/dev/null; then
    mkdir -p /etc/network/interfaces.d
    sed "s/@NIC@/$nic/g" "$d/net/ifupdown" >/etc/network/interfaces.d/vnode0
    # Static: already configured by hand above; ifupdown takes over from the next boot on.
    [ "$mode" = static ] || ifup "$nic" || say "ifup $nic failed"
fi

# sshd as soon as the clone is itself.
systemctl start ssh.service 2>/dev/null || systemctl start sshd.service
say "ready as $name"

# The resolver after sshd: SSH does not need it, and resolvconf's hooks took ~8 s of the
# spike's ~33 s in this script under load.
if [ "$mode" = static ] && [ -s "$d/net/resolv.conf" ] && [ ! -f /etc/netplan/90-vnode.yaml ]; then
    if command -v resolvconf >/dev/null; then
        resolvconf -a "$nic.vnode" <"$d/net/resolv.conf" || true
    elif ! command -v nmcli >/dev/null; then
        cp "$d/net/resolv.conf" /etc/resolv.conf
    fi
fi
# journald is deliberately not restarted to pick up the new machine-id: in the spike its
# restart stalled every process that logs (sshd's handshakes included) for ~9 s under load.
