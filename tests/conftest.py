"""Shared fixtures. Integration tests run vnode for real against the local libvirtd."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

# The fake download site's fixtures (mirror, blobs), for unit and integration tests alike.
pytest_plugins = ["tests.httpmirror", "tests.signing"]

REPO = Path(__file__).resolve().parent.parent
VNODE = [sys.executable, "-m", "vnode.cli"]
IMAGE_STORE = Path(os.environ.get("VNODE_TEST_IMAGES", "/var/lib/vnode/images"))
TEST_DISTRO = os.environ.get("VNODE_TEST_DISTRO", "d12")
VIRT_TYPE = os.environ.get("VNODE_TEST_VIRT_TYPE", "qemu")


@attrs.frozen
class Lab:
    """An isolated vnode installation: its own state dir, pool stem and isolated network."""

    config_path: Path
    state: Path
    network: str
    subnet_prefix: str  # "10.231.N"
    stem: str
    # The interpreter running vnode: a module's own environment where it installs plugins
    # (tests/harness/pluginenv.py).
    python: str = sys.executable

    def env(self) -> dict[str, str]:
        return {**os.environ, "VNODE_CONFIG": str(self.config_path)}

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, "-m", "vnode.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_json(self, *args: str, timeout: float = 600) -> tuple[int, list[dict]]:
        result = self.run(*args, "--json", timeout=timeout)
        assert result.stdout.strip(), f"no JSON output; stderr:\n{result.stderr}"
        return result.returncode, json.loads(result.stdout)

    def ssh(self, node: str, command: str) -> subprocess.CompletedProcess[str]:
        return self.run("ssh", node, command, timeout=60)

    def ip_of(self, number: int) -> str:
        return f"{self.subnet_prefix}.{100 + number}"

    def name(self, number: int) -> str:
        return f"{self.stem}{number:02d}"

    @property
    def known_hosts(self) -> Path:
        return self.state / "ssh" / "known_hosts"

    def network_xml(self, *, missing_ok: bool = False) -> str:
        """The lab network's live XML; "" if it does not exist and ``missing_ok``."""
        result = _virsh("net-dumpxml", self.network)
        if result.returncode != 0 and not missing_ok:
            raise AssertionError(f"no network {self.network}: {result.stderr.strip()}")
        return result.stdout


def domain_names(prefix: str = "") -> set[str]:
    """Domains on the host whose names start with ``prefix`` (a lab's stem: others may come
    and go meanwhile, the host is shared)."""
    out = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name for name in out.split() if name.startswith(prefix)}


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True, check=False
    )


def domain_xml(name: str) -> str:
    """A domain's live XML, as libvirt has it now."""
    result = _virsh("dumpxml", name)
    if result.returncode != 0:
        raise AssertionError(f"no domain {name}: {result.stderr.strip()}")
    return result.stdout


def cleanup_lab(lab: Lab) -> None:
    """Remove everything the lab made, whatever state the tests left it in."""
    lab.run("destroy", "--all", timeout=300)
    # Belt and braces: any domain whose disks live in the lab's state dir.
    for name in _virsh("list", "--all", "--name").stdout.split():
        if name.startswith(lab.stem) and str(lab.state) in _virsh("dumpxml", name).stdout:
            _virsh("destroy", name)
            _virsh("undefine", name, "--nvram")
    _virsh("net-destroy", lab.network)
    _virsh("net-undefine", lab.network)
    shutil.rmtree(lab.state, ignore_errors=True)


# `make test` runs test files in parallel pytest-xdist workers ("gw0", "gw1", ...): each takes
# its own share of the octets below, so two labs never pick one subnet (or MAC prefix) at once.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(_WORKER.removeprefix("gw")) if _WORKER else 0
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def free_octet(*networks: str) -> int:
    """An N of this worker's share such that no address or route of this host lies in any of
    ``networks``.N (``free_octet("10.231")``: a 10.231.N.0/24 the lab network can use)."""
    used = subprocess.run(
        ["sh", "-c", "ip -4 route; ip -4 addr"], capture_output=True, text=True, check=True
    ).stdout
    free = [
        n
        for n in range(16, 250)
        if n % _WORKERS == _WORKER_INDEX and not any(f"{net}.{n}." in used for net in networks)
    ]
    return random.choice(free)


# Domain names are global on a libvirtd: runs of the suite side by side (developers' labs) and
# the workers of one run need stems of their own, so every stem carries this prefix.
LAB_PREFIX = os.environ.get("VNODE_TEST_LAB", "") + (
    "abcdefghijklmnop"[_WORKER_INDEX] if _WORKER else ""
)


def make_lab(stem: str, image_store: Path = IMAGE_STORE, state: Path | None = None) -> Lab:
    """A lab config; ``state`` may be a directory the caller prepared (e.g. a small tmpfs)."""
    stem = LAB_PREFIX + stem
    token = uuid.uuid4().hex[:6]
    state = state or Path(f"/var/lib/vnode-test-{token}")
    state.mkdir(mode=0o755, parents=True, exist_ok=True)
    octet = free_octet("10.231")
    network = f"vnt-{token}"
    config = state / "config.toml"
    config.write_text(
        f"""
[defaults]
distro = "{TEST_DISTRO}"
virt_type = "{VIRT_TYPE}"
timeout = 240

[paths]
state = "{state}"
image_store = "{image_store}"

[images]
auto_refresh = false  # the catalogs' upstream is on the internet: never asked from tests

[[pools]]
stem = "{stem}"
width = 2
first = 0
last = 30
mac_prefix = "52:54:00:ee:{octet:02x}"

[libvirt_network]
name = "{network}"
subnet = "10.231.{octet}.0/24"
forward = "none"
domain = "lab"
"""
    )
    return Lab(
        config_path=config, state=state, network=network, subnet_prefix=f"10.231.{octet}", stem=stem
    )


@pytest.fixture(scope="session")
def host_ready() -> None:
    """Integration tests need libvirtd and the test image; `make test` provides both."""
    if _virsh("version").returncode != 0:
        pytest.fail("libvirtd is not reachable on qemu:///system: run `make setup` first")
    image = IMAGE_STORE / f"{TEST_DISTRO}.qcow2"
    if not image.exists():
        pytest.fail(f"{image} is missing: run `make image` first")


@pytest.fixture(scope="module")
def lab(host_ready: None) -> Iterator[Lab]:
    """A fresh isolated lab per test module, removed afterwards even if tests fail."""
    made = make_lab("vt")
    try:
        yield made
    finally:
        cleanup_lab(made)


# The integration files that boot guests longest, longest first (measured: `make test`'s
# durations). With parallel workers a long file must not be left for the end, where one worker
# would run it while the others sit idle; the rest keep their order. (`make test` passes
# --no-loadscope-reorder: by default pytest-xdist hands out the files with most tests first.)
LONGEST_FIRST = (
    "test_two_hosts.py",
    "test_reliability.py",
    "test_lab_file.py",
    "test_nics.py",
    "test_image_versions.py",
    "test_warm.py",
    "test_lab_day.py",
    "test_core.py",
    "test_bridge.py",
    "test_bridge_create_nm.py",
    "test_direct.py",
    "test_third_party_network.py",
    "test_third_party_plugins.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if item.path.parent.name == "integration" and name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
