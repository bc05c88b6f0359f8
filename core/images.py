"""The image store: one qcow2 per distro under paths.images, readable by the qemu user."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from vnode.config import Config, load_config
from vnode.errors import UsageError
from vnode.plugins import load_plugins, resolve_distro


@attrs.frozen
class ImageEntry:
    distro: str
    title: str
    path: Path
    present: bool
    size: int | None

    @property
    def size_human(self) -> str:
        return f"{self.size / 2**20:.0f} MiB" if self.size is not None else "-"

    def to_dict(self) -> dict[str, object]:
        return {**attrs.asdict(self), "path": str(self.path)}


def list_images(config: Config | None = None) -> list[ImageEntry]:
    config = config or load_config()
    hook = load_plugins().hook
    names = {n for names in hook.vnode_distro_names() for n in names}
    distros = {d.name: d for n in names if (d := hook.vnode_distro_resolve(name=n))}
    entries = []
    for distro in sorted(distros.values(), key=lambda d: (d.family, d.name)):
        path = config.paths.images / distro.image_filename
        size = path.stat().st_size if path.exists() else None
        entries.append(ImageEntry(distro.name, distro.title, path, size is not None, size))
    return entries


def build_image(
    name: str, *, force: bool = False, config: Config | None = None
) -> tuple[Path, bool]:
    """Build a distro's image with the plugin that can; returns (path, whether it was built)."""
    config = config or load_config()
    distro = resolve_distro(name)
    dest = config.paths.images / distro.image_filename
    if dest.exists() and not force:
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(dest.parent, 0o755)
    built = load_plugins().hook.vnode_image_build(distro=distro, dest=dest, config=config)
    if not built:
        raise UsageError(f"no plugin can build {distro.name} locally; fetch it instead")
    os.chmod(dest, 0o644)
    return dest, True
