"""The cloud-init vnode renders for each family passes cloud-init's own checks (no guest needed).

The checker is Debian 12's cloud-init (22.4), unpacked by `make cloud-init` and run by Debian's
python3: the very version d12 guests run. User-data is validated against its cloud-config
schema, strictly (deprecated keys fail too). 22.4 has no network-config schema, so
network-config goes through what a guest does with it: cloud-init parses it into its network
state and renders it with the renderer of the family (eni, netplan, NetworkManager,
sysconfig), and the static address must come out in the rendered files.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import attrs
import pytest

from tests.conftest import REPO
from vnode.cloudinit import render_seed
from vnode.keys import KeyPair, generate_keypair
from vnode.model import NodePlan, StaticAddress
from vnode.plugins import PluginHost
from vnode.warmstore import template_user_data

pytestmark = pytest.mark.integration

CLOUD_INIT = Path(os.environ.get("VNODE_TEST_CLOUD_INIT", REPO / ".venv" / "cloud-init"))
SITE = CLOUD_INIT / "root" / "usr" / "lib" / "python3" / "dist-packages"
DEBIAN_PYTHON = "/usr/bin/python3"
# One release per renderer the families use: Fedora >= 33 NetworkManager, older sysconfig.
DISTROS = ("f43", "f30", "u24.04", "u18.04", "d12", "d13")
ADDRESS = StaticAddress(
    ip="10.0.0.103", prefix=24, gateway="10.0.0.1", dns=("10.0.0.1",), search=("lab",)
)

# cloud-init 22.4's schema predates its own documented way to create no default user
# (`users: []`, minItems 1 there; newer versions accept it). Nothing else is tolerated.
KNOWN_OLD_SCHEMA_PROBLEMS = {"users: [] is too short"}

# Runs inside Debian's python3 (-I: no site or environment leaks in from the venv).
CHECKER = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import yaml
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_schema
from cloudinit.distros import debian, fedora, ubuntu
from cloudinit.net import eni, netplan, network_manager, network_state, sysconfig

RENDERERS = {"eni": eni, "netplan": netplan, "networkmanager": network_manager,
             "sysconfig": sysconfig}
DISTROS = {"debian": debian.Distro, "fedora": fedora.Distro, "ubuntu": ubuntu.Distro}


def schema_problems(text):
    try:
        validate_cloudconfig_schema(yaml.safe_load(text), get_schema(), strict=True)
    except SchemaValidationError as exc:
        found = [*(exc.schema_errors or ()), *(exc.schema_deprecations or ())]
        return [f"{path}: {message}" for path, message in found]
    return []


def render(text, family, renderer):
    try:
        state = network_state.parse_net_config_data(yaml.safe_load(text), skip_broken=False)
        config = dict(DISTROS[family].renderer_configs.get(renderer, {}))
        # 22.4's netplan renderer joins an absolute netplan_path onto the target as is, which
        # would write to this host's /etc; relative paths keep every renderer in the target.
        for key, value in config.items():
            if key.endswith("_path"):
                config[key] = value.lstrip("/")
        # postcmds would run `netplan generate` on this host.
        config["postcmds"] = False
        target = tempfile.mkdtemp()
        RENDERERS[renderer].Renderer(config=config).render_network_state(state, target=target)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    files = {}
    for root, _, names in os.walk(target):
        for name in names:
            path = os.path.join(root, name)
            files[path[len(target):]] = open(path).read()
    return files, None


out = {}
for job in json.load(sys.stdin):
    files, error = render(job["network_config"], job["family"], job["renderer"])
    out[job["id"]] = {"schema": schema_problems(job["user_data"]), "rendered": files,
                      "network_error": error}
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def host_key() -> KeyPair:
    return generate_keypair("schema test host key")


# The renderer cloud-init uses in each release's cloud image (what its guests run).
RENDERER_OF = {
    "f43": "networkmanager",
    "f30": "sysconfig",
    "u24.04": "netplan",
    "u18.04": "netplan",
    "d12": "eni",
    "d13": "eni",
}


@pytest.fixture(scope="module")
def checked(host_key: KeyPair) -> dict[str, dict]:
    """Every family's seed (static and DHCP), checked in one run of cloud-init's code."""
    if not (SITE / "cloudinit").is_dir():
        pytest.fail(f"cloud-init's validator is missing at {CLOUD_INIT}: run `make cloud-init`")
    jobs = []
    for name in DISTROS:
        distro = PluginHost.discover().resolve_distro(name)
        for kind, address in (("static", ADDRESS), ("dhcp", None)):
            seed = render_seed(
                attrs.evolve(_plan(distro), address=address, dns_domain="lab"),
                authorized_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey test",
                host_key=host_key,
            )
            jobs.append(
                {
                    "id": f"{name}/{kind}",
                    "family": distro.family,
                    "renderer": RENDERER_OF[name],
                    "user_data": seed.user_data,
                    "network_config": seed.network_config,
                }
            )
        # The lab's own cloud-config (issue 14), merged as `up --cloud-config` merges it.
        seed = render_seed(
            attrs.evolve(
                _plan(distro),
                address=ADDRESS,
                dns_domain="lab",
                user_cloud_config=_lab_cloud_config(distro.name),
            ),
            authorized_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey test",
            host_key=host_key,
        )
        jobs.append(
            {
                "id": f"{name}/lab",
                "family": distro.family,
                "renderer": RENDERER_OF[name],
                "user_data": seed.user_data,
                "network_config": seed.network_config,
            }
        )
    # A warm template's own first boot (vnode.warmstore): no network-config at all.
    jobs.append(
        {
            "id": "warm-template",
            "family": "debian",
            "renderer": "eni",
            "user_data": template_user_data(),
            "network_config": "version: 2\nethernets: {}\n",
        }
    )
    result = subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", CHECKER, str(SITE)],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        # A broken checker is a failure of its own, not a schema verdict.
        pytest.fail(f"cloud-init's checker failed:\n{result.stderr}")
    return json.loads(result.stdout)


LAB_CLOUD_CONFIG = """#cloud-config
packages: [jq]
users:
  - name: ops
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops"]
ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMore more"]
write_files:
  - path: /etc/lab/{{ name }}.conf
    content: "number={{ number }} address={{ address }}"
runcmd:
  - [sh, -c, "echo {{ name }} > /etc/lab-name"]
"""


def _lab_cloud_config(distro: str) -> str:
    from vnode.userconfig import (
        CloudConfigSource,
        check_conflicts,
        dump,
        node_values,
        render_sources,
    )

    values = node_values(
        name="vnode03", number=3, pool="vnode", distro=distro, address=ADDRESS.ip, fqdn="x"
    )
    merged = render_sources([CloudConfigSource("lab.yaml", LAB_CLOUD_CONFIG)], values)
    check_conflicts(merged, ())
    return dump(merged)


@pytest.mark.parametrize("name", DISTROS)
def test_user_data_with_the_labs_cloud_config_passes_the_schema(checked: dict, name: str) -> None:
    problems = set(checked[f"{name}/lab"]["schema"]) - KNOWN_OLD_SCHEMA_PROBLEMS
    assert not problems, problems


def test_warm_template_user_data_passes_the_schema(checked: dict) -> None:
    problems = set(checked["warm-template"]["schema"]) - KNOWN_OLD_SCHEMA_PROBLEMS
    assert not problems, problems


def _plan(distro: object) -> NodePlan:
    return NodePlan(
        name="vnode03",
        number=3,
        pool="vnode",
        mac="52:54:00:00:00:03",
        distro=distro,
        memory_mib=1024,
        vcpus=1,
        disk_gb=10,
        network="libvirt:vnode",
        virt_type="qemu",
        node_dir=Path("/var/lib/vnode/nodes/vnode03"),
    )


@pytest.mark.parametrize("name", DISTROS)
def test_user_data_passes_the_cloud_config_schema(checked: dict, name: str) -> None:
    for kind in ("static", "dhcp"):
        problems = set(checked[f"{name}/{kind}"]["schema"]) - KNOWN_OLD_SCHEMA_PROBLEMS
        assert not problems, problems


@pytest.mark.parametrize("name", DISTROS)
def test_static_network_config_renders_with_the_family_renderer(checked: dict, name: str) -> None:
    outcome = checked[f"{name}/static"]
    assert outcome["network_error"] is None
    rendered = "\n".join(outcome["rendered"].values())
    assert "10.0.0.103" in rendered
    assert "10.0.0.1" in rendered  # the gateway and the DNS server


@pytest.mark.parametrize("name", DISTROS)
def test_dhcp_network_config_renders_with_the_family_renderer(checked: dict, name: str) -> None:
    outcome = checked[f"{name}/dhcp"]
    assert outcome["network_error"] is None
    assert outcome["rendered"], "the renderer wrote no file"
    rendered = "\n".join(outcome["rendered"].values()).lower()
    assert DHCP_WORDS[RENDERER_OF[name]] in rendered


# How each renderer writes "take DHCP" for the NIC.
DHCP_WORDS = {
    "networkmanager": "method=auto",
    "sysconfig": "bootproto=dhcp",
    "netplan": "dhcp4: true",
    "eni": "inet dhcp",
}
