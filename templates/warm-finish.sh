#!/bin/sh
# vnode template: the last step of the template's own boot. Waits until cloud-init is done,
# removes what must not reach a clone (host keys, root's keys, the machine's own secrets),
# and tells vnode on the serial console that the guest may be saved.
set -u
while [ ! -e /var/lib/cloud/instance/boot-finished ]; do sleep 0.2; done
# Clones must never run cloud-init again: a reboot would regenerate keys and network config.
touch /etc/cloud/cloud-init.disabled
systemctl stop ssh.service sshd.service ssh.socket sshd.socket 2>/dev/null
rm -f /etc/ssh/ssh_host_*
rm -f /root/.ssh/authorized_keys
# Secrets and identities each clone must make for itself: the random seeds, the key systemd
# encrypts credentials with, DHCP clients' leases and DUIDs (dhclient keeps its DUID in its
# lease file; networkd derives its own from the machine-id, renewed per clone).
rm -f /var/lib/systemd/random-seed /var/lib/urandom/random-seed
rm -f /var/lib/systemd/credential.secret
rm -f /var/lib/dhcp/*.leases /var/lib/dhcp/*.lease /var/lib/dhclient/*.lease*
rm -f /var/lib/NetworkManager/*.lease /var/lib/dhcpcd/*.lease /var/lib/dhcpcd/duid
systemctl daemon-reload
udevadm settle
sync
# A smaller saved state is copied and restored faster; the guest re-reads from its disk.
echo 3 > /proc/sys/vm/drop_caches
# ... except what every clone runs in its first seconds (the agent, the apply script, sshd
# and what a login runs: PAM, the motd, the shell): read from the clone's disk under plain
# emulation (TCG), each program's first start cost ~0.5-0.8 s; in the saved page cache it
# costs a few MB of state (docs/warm-clones.md, "At the limit").
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
programs=
# (resolvconf's hooks run sed, flock, head, tail and readlink.)
for program in sh bash rm mkdir tar date perl ln mount mv udevadm ip systemctl systemd-run \
    sshd hostname run-parts uname env resolvconf ifup cat sed flock head tail readlink \
    sleep; do
    path=$(command -v "$program") && programs="$programs $path"
done
# One ldd for all of them (each start of it costs as much as the reading): the shared
# libraries they load, from lines "name => path (address)" or "path (address)".
# shellcheck disable=SC2086 # the paths are split on purpose
libraries=$(ldd $programs 2>/dev/null | while read -r first arrow path _; do
    if [ "$arrow" = "=>" ]; then echo "$path"; else echo "$first"; fi
done)
# shellcheck disable=SC2086
for file in $programs $libraries /usr/lib/openssh/* /lib/*/security/*.so \
    /usr/lib/*/security/*.so /etc/pam.d/* /etc/ssh/sshd_config /etc/ssh/sshd_config.d/* \
    /etc/update-motd.d/* /etc/passwd /etc/group /etc/shadow /etc/nsswitch.conf /etc/profile \
    /etc/bash.bashrc /root/.bashrc /root/.profile /etc/resolvconf/update.d/* /lib/resolvconf/*; do
    [ ! -f "$file" ] || echo "$file"
done | xargs cat >/dev/null 2>&1
echo "vnode-template-ready" > /dev/ttyS0
