"""The lab's cloud-config merged with vnode's: pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vnode.errors import UsageError
from vnode.userconfig import (
    CloudConfigSource,
    check_conflicts,
    merge,
    merge_user_data,
    node_values,
    read_sources,
    render_sources,
)

VALUES = node_values(
    name="vnode03", number=3, pool="vnode", distro="d12", address="10.0.0.103", fqdn="vnode03.lab"
)
VNODE = """#cloud-config
hostname: "vnode03"
users: []
disable_root: false
ssh_authorized_keys: ["ssh-ed25519 AAAA vnode"]
ssh_genkeytypes: ["ed25519"]
"""


def source(text: str, path: str = "lab.yaml") -> CloudConfigSource:
    return CloudConfigSource(path=path, text=text)


def test_maps_merge_lists_append_scalars_replace() -> None:
    base = {"packages": ["a"], "write_files": [{"path": "/x"}], "apt": {"a": 1}, "timezone": "UTC"}
    extra = {"packages": ["b"], "apt": {"b": 2}, "timezone": "Europe/Paris"}
    assert merge(base, extra) == {
        "packages": ["a", "b"],
        "write_files": [{"path": "/x"}],
        "apt": {"a": 1, "b": 2},
        "timezone": "Europe/Paris",
    }


def test_templates_get_the_nodes_values_and_files_merge_in_order() -> None:
    first = source("#cloud-config\npackages: [jq]\nruncmd: ['echo {{ name }} {{ number }}']\n")
    second = source(
        "#cloud-config\npackages: [curl]\nwrite_files:\n"
        "  - path: /etc/{{ name }}.conf\n    content: '{{ address }} {{ fqdn }} {{ pool }}'\n"
    )
    merged = render_sources([first, second], VALUES)
    assert merged["packages"] == ["jq", "curl"]
    assert merged["runcmd"] == ["echo vnode03 3"]
    assert merged["write_files"] == [
        {"path": "/etc/vnode03.conf", "content": "10.0.0.103 vnode03.lab vnode"}
    ]


def test_an_unknown_template_value_is_bad_input() -> None:
    with pytest.raises(UsageError, match=r"lab.yaml: template: 'nme' is undefined"):
        render_sources([source("#cloud-config\nruncmd: ['{{ nme }}']\n")], VALUES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#cloud-config\n- a\n", "must be a map"),
        ("#cloud-config\nfoo: [\n", "not valid YAML"),
    ],
)
def test_broken_files_are_bad_input(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        render_sources([source(text)], VALUES)


def test_files_must_exist_and_say_cloud_config(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file"):
        read_sources([tmp_path / "missing.yaml"])
    plain = tmp_path / "plain.yaml"
    plain.write_text("packages: [jq]\n")
    with pytest.raises(UsageError, match="first line must be '#cloud-config'"):
        read_sources([plain])
    good = tmp_path / "good.yaml"
    good.write_text("#cloud-config\npackages: [jq]\n")
    assert read_sources([good])[0].text.endswith("[jq]\n")


def test_a_vnode_key_is_a_conflict_naming_the_key() -> None:
    with pytest.raises(UsageError, match=r"key 'ssh_genkeytypes' is set by vnode.*--override-key"):
        check_conflicts({"packages": ["jq"], "ssh_genkeytypes": ["rsa"]}, ())
    check_conflicts({"ssh_genkeytypes": ["rsa"]}, ("ssh_genkeytypes",))
    # Adding users and keys for root is what labs do: no conflict.
    check_conflicts({"users": [{"name": "ops"}], "ssh_authorized_keys": ["k"]}, ())


def test_only_vnode_keys_can_be_overridden() -> None:
    with pytest.raises(UsageError, match="--override-key packages: not one of vnode's keys"):
        check_conflicts({}, ("packages",))


def test_merged_user_data_keeps_vnode_keys_and_appends_lists() -> None:
    user = "users: [{name: ops}]\nssh_authorized_keys: ['ssh-ed25519 BBBB ops']\npackages: [jq]\n"
    text = merge_user_data(VNODE, user, ())
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert data["hostname"] == "vnode03"
    assert data["users"] == [{"name": "ops"}]
    assert data["ssh_authorized_keys"] == ["ssh-ed25519 AAAA vnode", "ssh-ed25519 BBBB ops"]
    assert data["packages"] == ["jq"]


def test_an_overridden_key_is_the_users_value() -> None:
    data = yaml.safe_load(merge_user_data(VNODE, "ssh_genkeytypes: [rsa]\n", ("ssh_genkeytypes",)))
    assert data["ssh_genkeytypes"] == ["rsa"]


def test_no_user_config_leaves_vnode_text_as_it_is() -> None:
    assert merge_user_data(VNODE, "", ()) is VNODE


@pytest.mark.parametrize(
    "expression",
    [
        "cycler.__init__.__globals__.os.popen('id').read()",
        "lipsum.__globals__['os'].system('true')",
        "''.__class__.__mro__[1].__subclasses__()",
        "range(10**9) | list | length",
        "1 / 0",
    ],
)
def test_a_template_cannot_reach_python_or_exhaust_the_host(
    expression: str, tmp_path: Path
) -> None:
    text = f"#cloud-config\nruncmd: ['{{{{ {expression} }}}}']\n"
    with pytest.raises(UsageError, match=r"^cloud-config lab.yaml: template: ") as caught:
        render_sources([source(text)], VALUES)
    assert "\n" not in str(caught.value)


def test_the_sandbox_keeps_what_labs_write() -> None:
    text = (
        "#cloud-config\nruncmd:\n{% for i in range(number) %}  - 'echo {{ i }} {{ name|upper }}'\n"
        "{% endfor %}"
    )
    assert render_sources([source(text)], VALUES)["runcmd"] == [
        "echo 0 VNODE03",
        "echo 1 VNODE03",
        "echo 2 VNODE03",
    ]
