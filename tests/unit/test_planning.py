"""Planning up: the lab's cloud-config in each node's plan (config files, pools, the command
line, conflicts), and plan_up as a whole over one host or several."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import yaml

from vnode import planning
from vnode.cloudinit import render_seed
from vnode.config import build_config
from vnode.errors import UsageError
from vnode.keys import generate_keypair
from vnode.session import Session
from vnode.spec import parse_specs


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _plans(tmp_path: Path, options: planning.UpOptions, specs: list[str]) -> list:
    common = _write(tmp_path / "common.yaml", "#cloud-config\npackages: [jq]\n")
    pooled = _write(
        tmp_path / "lab.yaml", "#cloud-config\nruncmd: ['echo {{ name }} {{ address }}']\n"
    )
    config = build_config(
        {
            "paths": {"state": str(tmp_path / "state")},
            "defaults": {"cloud_config": [common]},
            "pools": [
                {"stem": "vnode"},
                {"stem": "lab", "mac_prefix": "52:54:00:00:01", "cloud_config": [pooled]},
            ],
        }
    )
    session = Session.for_config(config)
    backend = session.plugins.network_backend("libvirt", session.plugin_context(connect=False))
    refs = parse_specs(specs, config.pools)
    defaults = planning.effective_defaults(config.defaults, options)
    sources = planning.cloud_config_sources(session, defaults, options, refs)
    return [
        planning.plan_node(session, ref, defaults, backend, "qemu", sources, options.override_keys)
        for ref in refs
    ]


def test_each_node_gets_defaults_then_pool_then_command_line(tmp_path: Path) -> None:
    extra = _write(tmp_path / "cli.yaml", "#cloud-config\npackages: [curl]\n")
    options = planning.UpOptions(distro="d12", cloud_config=(extra,))
    plain, pooled = _plans(tmp_path, options, ["3", "lab4"])
    assert yaml.safe_load(plain.user_cloud_config) == {"packages": ["jq", "curl"]}
    assert yaml.safe_load(pooled.user_cloud_config) == {
        "packages": ["jq", "curl"],
        "runcmd": [f"echo lab04 {pooled.address.ip}"],
    }
    seed = render_seed(pooled, authorized_key="ssh-ed25519 AAAA k", host_key=generate_keypair("t"))
    user_data = yaml.safe_load(seed.user_data)
    assert user_data["hostname"] == "lab04"
    assert user_data["packages"] == ["jq", "curl"]


def test_a_vnode_key_stops_the_plan_unless_overridden(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", "#cloud-config\nmanage_etc_hosts: false\n")
    with pytest.raises(UsageError, match="'manage_etc_hosts' is set by vnode"):
        _plans(tmp_path, planning.UpOptions(distro="d12", cloud_config=(bad,)), ["3"])
    options = planning.UpOptions(
        distro="d12", cloud_config=(bad,), override_keys=("manage_etc_hosts",)
    )
    (plan,) = _plans(tmp_path, options, ["3"])
    assert plan.cloud_config_overrides == ("manage_etc_hosts",)
    seed = render_seed(plan, authorized_key="ssh-ed25519 AAAA k", host_key=generate_keypair("t"))
    assert yaml.safe_load(seed.user_data)["manage_etc_hosts"] is False


def test_an_unknown_override_key_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--override-key packages"):
        _plans(tmp_path, planning.UpOptions(distro="d12", override_keys=("packages",)), ["3"])


def test_run_steps_are_in_the_plan_order() -> None:
    steps = planning.run_steps(("a", "b"), ())
    assert [step.label for step in steps] == ["a", "b"]


# -- plan_up as a whole, against libvirt's own test driver (test:///default) ------------------

DEAD_URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def _session(tmp_path: Path, **data: object) -> Session:
    config = {
        "defaults": {"uri": "test:///default", "virt_type": "qemu", "distro": "d12"},
        "paths": {"state": str(tmp_path / "state"), "image_store": str(tmp_path / "images")},
        "images": {"auto_refresh": False},
        **data,
    }
    return Session.for_config(build_config(config))


# fetch: the images are not in the store; nothing is created by planning anyway.
FETCH = planning.UpOptions(fetch=True)


def test_a_lab_without_hosts_plans_every_node_on_the_one_local_host(tmp_path: Path) -> None:
    with _session(tmp_path) as session:
        plan = planning.plan_up(["3", "4"], FETCH, session=session)
    assert plan.names == ["vnode03", "vnode04"]
    assert {node.host for node in plan.nodes} == {"local"}
    assert list(plan.hosts) == ["local"] and list(plan.backends) == ["local"]
    assert [node.address.ip for node in plan.nodes] == ["192.168.150.103", "192.168.150.104"]
    # Node files stay in the state directory: no pool, no volume directory.
    assert all(node.volume_dir is None for node in plan.nodes)
    assert plan.failed == {} and plan.moves == {}


def test_a_host_the_lab_does_not_have_is_bad_input(tmp_path: Path) -> None:
    with _session(tmp_path) as session, pytest.raises(UsageError, match="no host 'hv1'"):
        planning.plan_up(["3@hv1"], FETCH, session=session)


def test_a_lone_host_that_does_not_answer_is_the_commands_error(tmp_path: Path) -> None:
    from vnode.errors import EnvironmentProblem

    lone = _session(tmp_path, defaults={"uri": DEAD_URI})
    with lone as session, pytest.raises(EnvironmentProblem, match="nonexistent"):
        planning.plan_up(["3"], FETCH, session=session)


def _two_hosts(tmp_path: Path) -> Session:
    hosts = [
        {"name": "hv1", "uri": "test:///default", "pool_dir": str(tmp_path / "pool")},
        {"name": "down", "uri": DEAD_URI},
    ]
    return _session(tmp_path, hosts=hosts)


def test_with_other_hosts_a_dead_hosts_nodes_fail_alone(tmp_path: Path) -> None:
    with _two_hosts(tmp_path) as session:
        plan = planning.plan_up(["3", "4@down"], FETCH, session=session)
    assert [node.host for node in plan.nodes] == ["hv1", "-"]
    assert set(plan.failed) == {"vnode04"} and "host down" in plan.failed["vnode04"]
    assert plan.nodes[0].volume_dir == tmp_path / "pool"  # a listed host's pool


def test_all_or_nothing_refuses_before_anything_is_made(tmp_path: Path) -> None:
    from vnode.errors import EnvironmentProblem

    options = planning.UpOptions(fetch=True, all_or_nothing=True)
    nothing = r"nothing made \(--all-or-nothing\): host"
    with _two_hosts(tmp_path) as session, pytest.raises(EnvironmentProblem, match=nothing):
        planning.plan_up(["3", "4@down"], options, session=session)


def test_a_warm_node_on_a_pool_host_is_cloned_from_a_template_in_that_pool(
    tmp_path: Path,
) -> None:
    _with_image(tmp_path)
    options = planning.UpOptions(fetch=True, warm=True)
    with _two_hosts(tmp_path) as session:
        plan = planning.plan_up(["3"], options, session=session)
    (choice,) = plan.warm
    assert choice.warm and "no template of d12 yet" in choice.reason, choice.reason
    spec = choice.template
    assert spec.host == "hv1" and spec.directory == tmp_path / "pool"
    assert spec.disk == tmp_path / "pool" / f"template.{spec.key}-disk.qcow2"
    assert spec.save == tmp_path / "pool" / f"template.{spec.key}-state.save"


def _with_image(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "d12.qcow2").write_bytes(b"QFI\xfb")  # planning reads no more of it


def test_a_warm_node_carries_the_network_files_a_plugin_wrote(tmp_path: Path) -> None:
    _with_image(tmp_path)
    options = planning.UpOptions(fetch=True, warm=True)
    with _session(tmp_path) as session:
        plan = planning.plan_up(["3"], options, session=session)
    (choice,) = plan.warm
    assert choice.warm, choice.reason
    files = plan.nodes[0].guest_network_files
    assert files["mode"] == "static" and files["address"] == "192.168.150.103/24"


def test_without_a_plugin_for_the_guests_network_a_node_boots_cold(tmp_path: Path) -> None:
    from vnode.plugins import PluginHost, entry_point_sources

    _with_image(tmp_path)
    options = planning.UpOptions(fetch=True, warm=True)
    config = _session(tmp_path).config
    host = PluginHost(entry_point_sources(), disabled=("guest-network",))
    with Session.for_config(config, host) as session:
        plan = planning.plan_up(["3"], options, session=session)
    (choice,) = plan.warm
    assert not choice.warm and "vnode_guest_network_files" in choice.reason
    assert plan.nodes[0].guest_network_files == {}


def test_bad_firmware_is_bad_input(tmp_path: Path) -> None:
    options = planning.UpOptions(fetch=True, firmware="efi")
    with _session(tmp_path) as session, pytest.raises(UsageError, match="--firmware must be"):
        planning.plan_up(["3"], options, session=session)


def test_a_uefi_node_boots_cold_and_says_why(tmp_path: Path) -> None:
    (node,) = _plans(tmp_path, planning.UpOptions(distro="d12"), ["3"])
    assert planning._cold_only(node) is None
    reason = planning._cold_only(attrs.evolve(node, firmware="uefi-secure"))
    assert reason is not None and "UEFI node" in reason
