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
echo "vnode-template-ready" > /dev/ttyS0
