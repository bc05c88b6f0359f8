"""vnode wait's bad input, refused before anything is asked of a node (against libvirt's own
test driver); waiting for real guests is tests/integration/test_lab_day.py's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vnode import waiting
from vnode.config import build_config
from vnode.errors import UsageError
from vnode.planning import After
from vnode.progress import SilentReporter
from vnode.session import Session


@pytest.mark.parametrize(
    ("specs", "timeout", "words"),
    [
        ([], None, "name nodes to wait for"),
        (["3"], 0, "--timeout must be positive"),
        (["3"], None, "no node made by vnode: vnode03"),
    ],
)
def test_bad_input_is_refused(
    tmp_path: Path, specs: list[str], timeout: float | None, words: str
) -> None:
    config = {"defaults": {"uri": "test:///default"}, "paths": {"state": str(tmp_path)}}
    lab = Session.for_config(build_config(config))
    with lab as session, pytest.raises(UsageError, match=words):
        waiting.wait(
            session,
            specs,
            timeout=timeout,
            after=After(),
            reporter=SilentReporter(),
            started=time.monotonic(),
        )
