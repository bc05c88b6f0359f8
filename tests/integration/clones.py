"""What a warm clone says about itself over SSH, for the tests that check clones are
machines of their own (tests/integration/test_warm.py on the local host, test_two_hosts.py
on a second one)."""

from __future__ import annotations

import time

from tests.conftest import Lab

PROBE = (
    "hostname; cat /sys/class/net/*/address | grep -v '^00:00:00:00:00:00$'; "
    "ip -4 -o addr show scope global | awk '{print $4}'; "
    "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub; ls /etc/ssh | grep -c '^ssh_host_'; "
    "cat /etc/machine-id; cat /proc/sys/kernel/random/boot_id; "
    "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s.%N; "
    "cat /root/.ssh/authorized_keys"
)
# What two clones of one template must not share.
DISTINCT = ("hostname", "mac", "address", "host_key", "machine_id", "boot_id", "random")


def probe(lab: Lab, number: int) -> dict:
    """One clone's answers, with the host's clock around the question."""
    before = time.time()
    result = lab.ssh(str(number), PROBE)
    after = time.time()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return {
        "hostname": lines[0],
        "mac": lines[1],
        "address": lines[2],
        "host_key": lines[3],
        "host_keys": int(lines[4]),
        "machine_id": lines[5],
        "boot_id": lines[6],
        "random": lines[7],
        "clock": float(lines[8]),
        "authorized_keys": lines[9:],
        "window": (before, after),
    }


def check_own_identity(lab: Lab, number: int, seen: dict, address: str) -> None:
    """A clone is the node vnode planned: its name, MAC and address, only the host key vnode
    made and trusts, the user's key only, the host's clock."""
    assert seen["hostname"] == lab.name(number)
    assert seen["address"] == address
    assert seen["mac"].endswith(f":{number:02d}")
    known = dict(line.split(" ", 1) for line in lab.known_hosts.read_text().splitlines())
    # Only the key vnode generated: every key the template made was deleted before it was
    # saved, so none of the template's can be in a clone.
    assert seen["host_keys"] == 2  # ssh_host_ed25519_key and its .pub
    assert known[lab.name(number)] == seen["host_key"]
    before, after = seen["window"]
    assert before - 2 <= seen["clock"] <= after + 2, (seen["clock"], before, after)
    user_key = (lab.state / "ssh" / "id_ed25519.pub").read_text().split()[:2]
    assert [line.split()[:2] for line in seen["authorized_keys"] if line.strip()] == [user_key]
