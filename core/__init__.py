"""vnode: boot fresh libvirt/QEMU nodes from distro cloud images, many at once.

The library is what the CLI calls; see :mod:`vnode.api` for the documented entry points.
Importing this package stays cheap so that ``vnode --help`` starts fast.
"""

__version__ = "0.1.0"
