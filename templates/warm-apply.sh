#!/bin/sh
# vnode warm clone: make this restored copy of a template a machine of its own.
# Shipped on the clone's identity disk (a tar archive) and run by the template's agent with
# the directory holding the clone's values, one file each (no value is ever parsed as shell).
# Only POSIX sh, coreutils, util-linux's mount and iproute2: what every stock cloud image has.
# What network stack the guest uses is not known here: the guest network plugin's files
# (net/) say the address, and its net/persist script keeps it in the guest's own stack.
#
# Every program started costs ~0.1-0.2 s in a guest under plain emulation (TCG), and this
# script is most of a clone's time to SSH: values are read and files written with the
# shell's own read, printf and redirections wherever a program is not needed.
set -eu
d=$1
# The guest's uptime when the script began (the shell's read: no program started), for the
# "ready as" line: how long a clone spends here (bench/run.py --warm-sizes reads it).
read -r began _ </proc/uptime
# get VAR FILE: the file's first line into VAR (empty if the file is empty).
get() { IFS= read -r "$1" <"$d/$2" || true; }
# copy FILE DEST: a text file, byte for byte, without starting cp.
copy() { while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done <"$1" >"$2"; }
say() { echo "vnode-identity: $*" >/dev/ttyS0 2>/dev/null || true; }
# A failure is told on the console (`vnode log NODE`), with the step it happened in: the
# node is then unreachable, and the console is all a user can read.
step=start
trap 'rc=$?; [ "$rc" -eq 0 ] || say "failed (exit $rc) while: $step"' EXIT

step='clock'
# The wall clock first: the guest's clock still says when the template was saved. QEMU's
# RTC follows the host's clock across a restore; it counts whole seconds, so take the
# middle of the current one.
if [ -r /sys/class/rtc/rtc0/since_epoch ]; then
    read -r rtc </sys/class/rtc/rtc0/since_epoch
    date -u -s "@$rtc.5" >/dev/null
fi

step='entropy'
# Entropy the host drew for this clone, mixed into the kernel's pool; then RNDRESEEDCRNG
# (root only) makes the CRNG reseed from it at once (writing alone does not). perl-base is
# on every Debian and Ubuntu and starts faster than python3, which every cloud-init image
# has. Without either the kernel reseeds on its own schedule (and from the VM generation ID
# where its vmgenid driver is built in).
if command -v perl >/dev/null; then
    perl -e 'open(my $f, ">", "/dev/urandom") or die; local $/; my $s = <STDIN>;
        syswrite($f, $s) or die; ioctl($f, 0x5207, 0) or die' <"$d/random-seed" ||
        say "could not reseed the CRNG at once"
else
    cat "$d/random-seed" >/dev/urandom
    python3 -c 'import fcntl, os; fcntl.ioctl(os.open("/dev/urandom", os.O_WRONLY), 0x5207)' \
        2>/dev/null || say "could not reseed the CRNG at once"
fi

step='machine-id and boot ID'
# machine-id, and a boot ID of its own: the kernel made boot_id once, before the template
# was saved, and offers no way to renew it short of a reboot; readers see the clone's.
old_id=
[ ! -r /etc/machine-id ] || IFS= read -r old_id </etc/machine-id || true
get new_id machine-id
printf '%s\n' "$new_id" >/etc/machine-id
# D-Bus's own copy, where it is a file and not the usual link to /etc/machine-id.
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then
    printf '%s\n' "$new_id" >/var/lib/dbus/machine-id
fi
# The agent's directory holds the bind mount's source (readable through the mount: the
# file's own mode counts, not its directory's), so no directory is made for it.
copy "$d/boot-id" "$d/boot_id.mounted"
mount --bind "$d/boot_id.mounted" /proc/sys/kernel/random/boot_id

step='name'
# Name.
get name hostname
get fqdn fqdn
echo "$name" >/proc/sys/kernel/hostname
echo "$name" >/etc/hostname
if [ -f /etc/hosts ]; then
    {
        while IFS= read -r line || [ -n "$line" ]; do
            case $line in 127.0.1.1[[:space:]]*) ;; *) printf '%s\n' "$line" ;; esac
        done </etc/hosts
        if [ "$fqdn" = "$name" ]; then
            echo "127.0.1.1 $name"
        else
            echo "127.0.1.1 $fqdn $name"
        fi
    } >/etc/hosts.vnode
    mv /etc/hosts.vnode /etc/hosts
fi

step='keys'
# Root logs in with the user's key only; the host key vnode generated and trusts (the
# template's own keys were deleted before it was saved).
umask 077
[ -d /root/.ssh ] || mkdir /root/.ssh
copy "$d/authorized_keys" /root/.ssh/authorized_keys
for key in /etc/ssh/ssh_host_*; do
    [ ! -e "$key" ] || rm -f "$key"
done
copy "$d/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
umask 022
copy "$d/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub

step='finding the NIC'
# The NIC was hot-plugged with the clone's MAC; find it by that MAC.
get mac mac
find_nic() {
    nic=
    for path in /sys/class/net/*; do
        address=
        IFS= read -r address <"$path/address" 2>/dev/null || true
        [ "$address" != "$mac" ] || nic=${path##*/}
    done
}
find_nic
i=0
while [ -z "$nic" ] && [ $i -lt 200 ]; do
    sleep 0.05
    i=$((i + 1))
    find_nic
done
[ -n "$nic" ] || { say "no NIC with MAC $mac"; exit 1; }
udevadm settle -t 5 || true
find_nic # udev may have renamed it meanwhile

step='addressing the NIC'
get mode net/mode
get addr net/address
get gateway net/gateway
# "replace", not "add": an image's own network manager (NetworkManager's automatic wired
# connection) may have got the same address by DHCP from the reservation meanwhile, and
# "add" would then fail with "File exists" and leave the clone without sshd.
if [ "$mode" = static ]; then
    # The address first, then the link up with arp_notify: the kernel then announces the
    # address (a gratuitous ARP), and the host's first connection attempts, whose ARP
    # requests went unanswered so far, need not wait for the next retry (~1-2 s).
    echo 1 2>/dev/null >"/proc/sys/net/ipv4/conf/$nic/arp_notify" || true
    {
        echo "address replace $addr dev $nic"
        echo "link set dev $nic up"
        [ -z "$gateway" ] || echo "route replace default via $gateway dev $nic"
    } | ip -batch -
fi
step='starting sshd'
# sshd as soon as the clone is itself: it listens on every address, including one DHCP
# gives below, and nothing after this point changes what SSH sees.
systemctl start ssh.service 2>/dev/null || systemctl start sshd.service
read -r now _ </proc/uptime
say "ready as $name (identity applied and sshd started: uptime $began -> $now)"

step='the journal link'
# journald keeps writing under the template's machine-id directory until it restarts, and
# restarting it stalls every process that logs (sshd's handshakes too) for seconds; a link
# lets journalctl find the journal under the new id meanwhile (after sshd: SSH needs none).
for journal in /var/log/journal /run/log/journal; do
    if [ -n "$old_id" ] && [ -d "$journal/$old_id" ] && [ ! -e "$journal/$new_id" ]; then
        ln -s "$old_id" "$journal/$new_id"
    fi
done

step='persisting the network configuration'
# For later boots, in the guest's own network stack, DHCP started there and the resolver
# set: the guest network plugin's script knows the stacks (vnode_guest_network_files); a
# failure in it leaves the clone reachable, and is told on the console.
if [ -s "$d/net/persist" ]; then
    sh "$d/net/persist" "$d/net" "$nic" || say "the network plugin's persist script failed"
fi

step='reporting the address'
# DHCP: the address is the site's. Report it on the console in cloud-init's device table
# format: vnode's bridge and direct plugins read that table for a node the site's DNS does
# not know, and a clone runs no cloud-init to print it.
if [ "$mode" = dhcp ]; then
    got=
    i=0
    while [ -z "$got" ] && [ $i -lt 240 ]; do
        got=$(ip -4 -o address show dev "$nic" scope global |
            { read -r _ _ _ cidr _ || true; echo "${cidr%/*}"; })
        [ -n "$got" ] || { sleep 0.5; i=$((i + 1)); }
    done
    if [ -n "$got" ]; then
        {
            echo "ci-info: | Device | Up | Address | Mask | Scope | Hw-Address |"
            echo "ci-info: | $nic | True | $got | . | global | $mac |"
        } >/dev/ttyS0 2>/dev/null || true
    else
        say "no address from DHCP on $nic"
    fi
fi

step='the journal'
# journald still writes under the template's machine-id (it read it when it started) until
# it restarts, and a restart stalls every process that logs (sshd's handshakes too) for
# seconds under emulation. So it restarts a little later, once vnode's first SSH
# handshakes are over (a transient timer: nothing waits for it). From then on the clone's
# entries carry its own machine-id, in a directory of its own instead of the link made above.
systemd-run --quiet --unit=vnode-journal-renew --on-active=15 --timer-property=AccuracySec=1s \
    /bin/sh -c 'for journal in /var/log/journal /run/log/journal; do
        [ ! -L "$journal/$1" ] || rm -f "$journal/$1"; done
        systemctl restart systemd-journald.service' sh "$new_id" ||
    say "could not schedule journald's restart"
