#!/bin/sh
# vnode warm-clone agent (installed into a template during its own cloud-init boot).
# Started by udev/systemd when a disk with serial "vnode-identity" appears, i.e. right
# after vnode restored a clone from the template's saved state and hot-plugged the clone's
# identity disk. The disk holds a tar archive; its "apply" script does the work, so a fix to
# how identity is applied needs no new template.
set -eu
dir=/run/vnode-identity
# Each program started costs ~0.1-0.2 s under plain emulation: rm only if there is a leftover.
[ ! -e "$dir" ] || rm -rf "$dir"
mkdir -m 0700 "$dir"
tar -xf /dev/disk/by-id/virtio-vnode-identity -C "$dir"
exec /bin/sh "$dir/apply" "$dir"
