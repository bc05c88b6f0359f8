"""Removing a storage pool a test or the bench made through vnode's [[hosts]] (vnode itself
never removes a pool: it may hold what others keep there)."""

from __future__ import annotations

import contextlib
from typing import Any


def remove_pool(conn: Any, name: str) -> None:
    """Stop, empty, delete and undefine a pool; absent is fine."""
    import libvirt

    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    with contextlib.suppress(libvirt.libvirtError):
        if pool.isActive():
            for volume in pool.listAllVolumes(0):
                volume.delete(0)
            pool.destroy()
    # The directory may be gone already (removed with its state directory): undefine anyway.
    with contextlib.suppress(libvirt.libvirtError):
        pool.delete(0)
    with contextlib.suppress(libvirt.libvirtError):
        pool.undefine()
