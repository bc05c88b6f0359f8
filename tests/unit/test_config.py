"""Config validation of the core's own sections (plugin sections: test_plugins.py)."""

from __future__ import annotations

import pytest

from vnode.config import build_config
from vnode.errors import UsageError


def test_images_mirror_config_is_per_family_and_checked() -> None:
    config = build_config({"images": {"mirror": {"fedora": "http://127.0.0.1:8080/f"}}})
    assert config.images.mirror_for("fedora") == "http://127.0.0.1:8080/f"
    assert config.images.mirror_for("debian") is None
    assert build_config({}).images.mirror_for("fedora") is None


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ({"mirror": "http://x"}, "wrong type"),
        ({"mirror": {"fedora": "ftp://x/"}}, "not an http"),
        ({"mirror": {"fedora": 3}}, "wrong type"),
        ({"mirror": {"Fedora!": "http://x/"}}, "not a distro family"),
        ({"mirrors": {"fedora": "http://x/"}}, "unknown key"),
    ],
)
def test_bad_images_config_is_a_usage_error(images: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config({"images": images})


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ({"auto_refresh": "yes"}, "wrong type"),
        ({"catalog_max_age_days": 0}, "must be at least 1"),
    ],
)
def test_bad_catalog_refresh_settings_are_usage_errors(images: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config({"images": images})


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(UsageError, match="unknown key"):
        build_config({"defaults": {"memroy": 512}})
    with pytest.raises(UsageError, match="unknown config section"):
        build_config({"default": {}})
    with pytest.raises(UsageError, match="wrong type"):
        build_config({"defaults": {"memory": "lots"}})
    with pytest.raises(UsageError):
        build_config({"defaults": {"timeout": -1}})
    with pytest.raises(UsageError):
        build_config({"defaults": {"virt_type": "xen"}})
    with pytest.raises(UsageError):
        build_config({"libvirt_network": {"subnet": "10.0.0.0/30"}})


def test_config_pools_and_defaults() -> None:
    config = build_config(
        {
            "defaults": {"distro": "d12", "memory": 2048},
            "pools": [{"stem": "lab", "first": 1, "last": 9}],
        }
    )
    assert config.defaults.memory == 2048
    assert config.pools[0].name(3) == "lab03"
