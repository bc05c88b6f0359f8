"""Plugin discovery through entry points, as the CLI shows it (no guest needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import Lab

pytestmark = pytest.mark.integration

BUILT_INS = {
    "fedora": "distro",
    "ubuntu": "distro",
    "debian": "distro",
    "libvirt-network": "network",
    "bridge": "network",
    "direct": "network",
    "serial-console": "console",
}


def test_plugins_list_shows_the_built_in_plugins(lab: Lab) -> None:
    result = lab.run("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    for name, kind in BUILT_INS.items():
        assert plugins[name]["status"] == "ok"
        assert kind in plugins[name]["kinds"]
        assert plugins[name]["distribution"] == "vnode"
        assert plugins[name]["entry_point"].startswith(f"{name} = vnode_plugins.")
    table = lab.run("plugins", "list")
    assert all(name in table.stdout for name in BUILT_INS)


def test_libvirtd_unreachable_is_one_clear_line(lab: Lab) -> None:
    text = lab.config_path.read_text().replace(
        "[defaults]", '[defaults]\nuri = "qemu+unix:///system?socket=/nonexistent/sock"'
    )
    broken = lab.state / "broken-uri.toml"
    broken.write_text(text)
    result = lab.run("list")  # sanity: the lab's own config works
    assert result.returncode == 0
    env = {**os.environ, "VNODE_CONFIG": str(broken)}
    result = subprocess.run(
        [sys.executable, "-m", "vnode.cli", "up", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "libvirtd -d" in result.stderr


def test_doctor_passes_the_host_make_setup_prepared(lab: Lab) -> None:
    result = lab.run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    verdicts = {v["check"]: v for v in json.loads(result.stdout)}
    # What install/setup-host.sh is there to guarantee, each of which once cost seconds here.
    for check in ("libvirtd", "virtlogd", "/dev/kvm", "reaper", "plugins"):
        assert verdicts[check]["status"] == "ok", verdicts[check]
