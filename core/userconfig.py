"""The lab's own cloud-config, merged with the one vnode generates.

Users' files are Jinja templates (``{{ name }}``, ``{{ number }}``, ``{{ address }}``, ...),
rendered per node when the plan is made, then merged in order: maps key by key, lists
appended, scalars of a later file replacing an earlier one's (cloud-init's own
``dict(recurse_array)+list(append)`` merge). vnode's keys come first; a user's file that sets
one of the keys vnode relies on (host keys, hostname, root's login) is refused unless the
user names the key as one they mean to override.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from vnode.errors import UsageError

HEADER = "#cloud-config"

# What vnode's user-data.j2 sets and relies on: the node's name, the host key vnode recorded
# in its known_hosts, root's login. Changing one breaks the ready check or strict host keys.
PROTECTED_KEYS = (
    "hostname",
    "fqdn",
    "prefer_fqdn_over_hostname",
    "manage_etc_hosts",
    "disable_root",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "ssh_keys",
)


@attrs.frozen
class CloudConfigSource:
    """One user file, read when the plan is made."""

    path: str
    text: str


def read_sources(paths: Iterable[Path | str]) -> tuple[CloudConfigSource, ...]:
    """Read the user's cloud-config files; a missing or non-cloud-config file is a UsageError."""
    sources = []
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"cloud-config {path}: {exc.strerror or exc}") from None
        if not text.lstrip().startswith(HEADER):
            raise UsageError(f"cloud-config {path}: the first line must be {HEADER!r}")
        sources.append(CloudConfigSource(path=str(path), text=text))
    return tuple(sources)


def node_values(
    *, name: str, number: int, pool: str, distro: str, address: str | None, fqdn: str
) -> dict[str, Any]:
    """What a user's template may use; ``address`` is "" for a node that gets DHCP."""
    return {
        "name": name,
        "number": number,
        "pool": pool,
        "distro": distro,
        "address": address or "",
        "fqdn": fqdn,
    }


def render_sources(
    sources: Sequence[CloudConfigSource], values: Mapping[str, Any]
) -> dict[str, Any]:
    """Each file rendered with the node's values and parsed, then merged in order."""
    import jinja2
    import jinja2.sandbox
    import yaml

    # Not the YAML-escaping environment of vnode's own templates: the values are vnode's
    # node names, numbers and addresses (no quotes or newlines), and users write
    # `path: /etc/{{ name }}.conf`, where a quoted value would be wrong. Sandboxed: the text
    # is the user's, rendered by root, and a plain Environment lets a template reach Python
    # (`cycler.__init__.__globals__.os`) and run commands on the host.
    environment = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    merged: dict[str, Any] = {}
    for source in sources:
        try:
            text = environment.from_string(source.text).render(**values)
        except jinja2.TemplateError as exc:
            raise UsageError(f"cloud-config {source.path}: template: {exc}") from None
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # The template's own expressions failed (1/0, range(10**9) in the sandbox, ...).
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(f"cloud-config {source.path}: template: {reason}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"cloud-config {source.path}: not valid YAML: {exc}") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise UsageError(f"cloud-config {source.path}: must be a map of cloud-config keys")
        merged = merge(merged, data)
    return merged


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Maps merge key by key, lists are appended, anything else in ``extra`` replaces."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            out[key] = [*old, *value]
        else:
            out[key] = value
    return out


def check_conflicts(user: Mapping[str, Any], overrides: Iterable[str]) -> None:
    """A user's key that vnode sets and relies on is bad input unless the user overrides it."""
    allowed = set(overrides)
    unknown = sorted(allowed - set(PROTECTED_KEYS))
    if unknown:
        raise UsageError(
            f"--override-key {unknown[0]}: not one of vnode's keys ({', '.join(PROTECTED_KEYS)})"
        )
    for key in user:
        if key in PROTECTED_KEYS and key not in allowed:
            raise UsageError(
                f"cloud-config key {key!r} is set by vnode (it relies on it); "
                f"`--override-key {key}` overrides it if you mean it"
            )


def dump(data: Mapping[str, Any]) -> str:
    """A user's merged config as YAML (kept in the plan: what the node will get)."""
    if not data:
        return ""
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


def merge_user_data(vnode_user_data: str, user_yaml: str, overrides: Iterable[str]) -> str:
    """vnode's rendered user-data with the user's merged config on top; vnode's own text
    unchanged when the user has none."""
    if not user_yaml.strip():
        return vnode_user_data
    import yaml

    ours = yaml.safe_load(vnode_user_data)
    theirs = yaml.safe_load(user_yaml)
    allowed = set(overrides)
    merged = merge(ours, {k: v for k, v in theirs.items() if k not in allowed})
    merged.update({k: v for k, v in theirs.items() if k in allowed})
    return f"{HEADER}\n" + yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
