"""The Debian image builder's pure parts: apt sources, release names, prerequisites, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vnode.config import build_config
from vnode.errors import EnvironmentProblem, UsageError
from vnode.plugins import PluginHost
from vnode_plugins import debian_build
from vnode_plugins.debian_build import AptSource, find_host_mirror, resolve_suite


def _apt_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "etc/apt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    return tmp_path


DEB822 = """\
# the main archive
Types: deb deb-src
URIs: http://mirror.lab/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.lab/debian-security
Suites: bookworm-security
Components: main

Enabled: no
Types: deb
URIs: http://disabled.lab/debian
Suites: trixie
"""


def test_deb822_sources_skip_disabled_stanzas_and_keep_every_field() -> None:
    sources = debian_build._parse_deb822(DEB822)
    assert sources == [
        AptSource(
            ("deb", "deb-src"), ("http://mirror.lab/debian/",), ("bookworm", "bookworm-updates")
        ),
        AptSource(("deb",), ("http://security.lab/debian-security",), ("bookworm-security",)),
    ]


def test_one_line_sources_skip_options_comments_and_deb_src() -> None:
    text = (
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.lab/debian trixie main\n"
        "# deb http://commented.lab/debian trixie main\n"
        "deb-src http://src.lab/debian trixie main\n"
        "garbage line\n"
    )
    sources = debian_build._parse_one_line(text)
    assert sources == [
        AptSource(("deb",), ("http://mirror.lab/debian",), ("trixie",)),
        AptSource(("deb-src",), ("http://src.lab/debian",), ("trixie",)),
    ]


def test_the_mirror_carrying_the_suite_wins(tmp_path: Path) -> None:
    root = _apt_root(
        tmp_path,
        {
            "sources.list.d/debian.sources": DEB822,
            "sources.list": "deb http://trixie.lab/debian trixie main\n",
        },
    )
    assert find_host_mirror("bookworm", root) == "http://mirror.lab/debian"
    assert find_host_mirror("trixie", root) == "http://trixie.lab/debian"


def test_a_main_archive_entry_serves_another_release_but_security_never(tmp_path: Path) -> None:
    root = _apt_root(tmp_path, {"sources.list.d/debian.sources": DEB822})
    # A bookworm host building trixie: the main archive has every release.
    assert find_host_mirror("trixie", root) == "http://mirror.lab/debian"
    only_security = _apt_root(
        tmp_path / "sec", {"sources.list": "deb http://security.lab/ds bookworm-security main\n"}
    )
    assert find_host_mirror("trixie", only_security) is None


def test_release_numbers_and_codenames_resolve_and_others_are_usage_errors() -> None:
    assert resolve_suite("12") == "bookworm"
    assert resolve_suite("trixie") == "trixie"
    with pytest.raises(UsageError, match="unknown Debian release '9'"):
        resolve_suite("9")


def test_building_as_non_root_is_one_clear_environment_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(debian_build.os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="needs root"):
        debian_build._check_prerequisites()


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        debian_build.shutil, "which", lambda tool: None if tool == "mmdebstrap" else "/x"
    )
    with pytest.raises(EnvironmentProblem, match=r"missing build tools: mmdebstrap\b"):
        debian_build._check_prerequisites()


def _config(text: str, tmp_path: Path):
    import tomllib

    return build_config(tomllib.loads(text), PluginHost.discover(()).config_sections())


def test_debian_section_holds_the_apt_mirror(tmp_path: Path) -> None:
    config = _config('[debian]\napt_mirror = "http://mirror.lab/debian"\n', tmp_path)
    assert config.sections["debian"].apt_mirror == "http://mirror.lab/debian"


def test_debian_section_rejects_unknown_keys_and_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\[debian\].*mirror"):
        _config('[debian]\nmirror = "http://mirror.lab/debian"\n', tmp_path)
    with pytest.raises(UsageError, match=r"apt_mirror = 'mirror\.lab' is not"):
        _config('[debian]\napt_mirror = "mirror.lab"\n', tmp_path)


def test_the_disk_is_gpt_with_the_esp_first_and_the_root_bootable_on_bios(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(3 << 30)
    offset, size = debian_build._create_disk(raw, 3)
    table = json.loads(debian_build._run(["sfdisk", "--json", str(raw)]))["partitiontable"]
    parts = {p["node"].removeprefix(str(raw)): p for p in table["partitions"]}
    assert table["label"] == "gpt" and set(parts) == {"1", "15"}
    assert parts["15"]["type"] == debian_build.ESP_TYPE and parts["15"]["start"] == 2048
    assert parts["1"]["attrs"] == "LegacyBIOSBootable"
    # The root is last, in all the rest of the disk: growpart grows it into a bigger disk.
    assert offset == debian_build.ROOT_START and offset + size >= (3 << 30) - (1 << 20)


def test_grub_boots_the_same_kernel_as_extlinux() -> None:
    config = debian_build.grub_config("1234-abcd")
    assert "search --no-floppy --fs-uuid --set=root 1234-abcd" in config
    assert f"linux /vmlinuz root=UUID=1234-abcd {debian_build.KERNEL_ARGS}" in config
