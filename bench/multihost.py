"""vnode over two hypervisor hosts against the same nodes on one host, in one run.

    .venv/bin/python bench/multihost.py               # N = 2, 4; 1 run each
    .venv/bin/python bench/multihost.py --runs 3 --sizes 2

The second host is a libvirtd (with virtlogd and sshd) in its own network and mount
namespace on this machine, reached over qemu+ssh (tests/harness/hypervisor_host.py), so both
"hosts" share this machine's CPUs: the numbers show what the remote path costs (libvirt's
protocol over SSH, volume uploads, SSH jumps), not the capacity a second machine would add.

Measures (medians of --runs, with min and max):
- image upload: the base image sent to a fresh vnode pool on each host through a volume
  upload stream, read back and hashed (what the first `up` on a host does);
- control plane: `vnode up --no-wait` of N nodes until all domains run, then `vnode destroy`;
  all on the local host, and spread (odd numbers local, even ones on the second host);
- ready: `vnode up` of N nodes until all answer SSH, one host against two;
- warm: `vnode template make` on each host (a template is made on the host its clones run
  on), then `vnode up --warm` of N nodes until all answer SSH, one host against two
  (`--skip warm` leaves it out).

Writes bench/results/multihost-<timestamp>.json and bench/results/multihost.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import IMAGE_STORE, RESULTS, VNODE, median_row, repeat  # noqa: E402
from tests.harness.hypervisor_host import HypervisorHost  # noqa: E402
from tests.harness.pools import remove_pool  # noqa: E402
from vnode import hypervisor  # noqa: E402


@contextmanager
def two_host_lab(args: argparse.Namespace) -> Iterator[tuple[dict[str, str], HypervisorHost]]:
    """A vnode installation whose [[hosts]] are this machine and a namespaced second host."""
    token = uuid.uuid4().hex[:6]
    octet = random.randint(10, 250)
    state = Path(f"/var/lib/vnode-bench-mh-{token}")
    state.mkdir(mode=0o755)
    pool = f"vnbpool-{token}"
    with HypervisorHost(f"bm{token[:3]}", octet) as second:
        config = state / "config.toml"
        config.write_text(
            f'[defaults]\ndistro = "{args.distro}"\nvirt_type = "{args.virt_type}"\n'
            f"memory = {args.memory}\nvcpus = 1\ntimeout = {args.timeout}\n"
            f'[paths]\nstate = "{state}"\nimage_store = "{IMAGE_STORE}"\n'
            "[images]\nauto_refresh = false\n"
            '[[pools]]\nstem = "vm"\nmac_prefix = "52:54:00:ee:ed"\n'
            f'[libvirt_network]\nname = "vnbm-{token}"\nsubnet = "10.231.{octet}.0/24"\n'
            'forward = "none"\ndomain = "bench"\n'
            f'[[hosts]]\nname = "hv1"\nuri = "qemu:///system"\npool = "{pool}"\n'
            f'pool_dir = "{state}/pool"\n'
            f'[[hosts]]\nname = "hv2"\nuri = "{second.uri}"\n'
            f'known_hosts = "{second.known_hosts}"\nidentity = "{second.key}"\n'
        )
        env = {**os.environ, "VNODE_CONFIG": str(config)}
        try:
            yield env, second
        finally:
            subprocess.run([*VNODE, "destroy", "--all"], env=env, capture_output=True, check=False)
            for verb in ("net-destroy", "net-undefine"):
                subprocess.run(
                    ["virsh", "-q", "-c", "qemu:///system", verb, f"vnbm-{token}"],
                    capture_output=True,
                    check=False,
                )
            conn = hypervisor.connect("qemu:///system")
            remove_pool(conn, pool)
            conn.close()
            shutil.rmtree(state, ignore_errors=True)


def upload_run(uri: str, image: Path, sha256: str) -> float:
    """Seconds to send the image to a fresh pool on that host and verify it there."""
    conn = hypervisor.connect(uri)
    name = f"vnbup-{uuid.uuid4().hex[:6]}"
    target = f"/var/lib/libvirt/{name}" if uri.startswith("qemu+ssh") else f"/var/tmp/{name}"
    try:
        pool = hypervisor.ensure_pool(conn, name, target)
        start = time.monotonic()
        hypervisor.ensure_image(conn, pool, image.name, image, sha256)
        return time.monotonic() - start
    finally:
        remove_pool(conn, name)
        conn.close()


def _specs(n: int, spread: bool) -> list[str]:
    return [f"{i}@hv2" if spread and i % 2 == 0 else f"{i}@hv1" for i in range(1, n + 1)]


def up_run(n: int, spread: bool, env: dict[str, str], wait: bool, warm: bool = False) -> float:
    specs = _specs(n, spread)
    argv = [*VNODE, "up", *specs, "--json"] + ([] if wait else ["--no-wait"])
    argv += ["--warm"] if warm else []
    start = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    wanted = "ready" if wait else "started"
    states = [node["state"] for node in json.loads(result.stdout or "[]")]
    boots = [node.get("boot") for node in json.loads(result.stdout or "[]")]
    if result.returncode != 0 or states.count(wanted) != n:
        raise RuntimeError(f"vnode up failed: {result.stdout}{result.stderr}")
    if warm and boots.count("warm") != n:
        raise RuntimeError(f"vnode up --warm booted cold: {result.stderr}")
    subprocess.run([*VNODE, "destroy", "--all"], env=env, capture_output=True, check=True)
    return seconds


def measure(args: argparse.Namespace) -> dict:
    image = IMAGE_STORE / f"{args.distro}.qcow2"
    from vnode.images import read_record

    record = read_record(image)  # beside its version in the versioned store
    if record is None:
        raise RuntimeError(f"{image} has no record: build or import it with vnode")
    sha256 = record.sha256
    results: dict = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
        "distro": args.distro,
        "image_mib": round(image.stat().st_size / 2**20),
        "virt_type": args.virt_type,
        "memory": args.memory,
        "cpus": os.cpu_count(),
        "upload": {},
        "control_plane": {},
        "ready": {},
        "template_make": {},
        "warm": {},
    }
    with two_host_lab(args) as (env, second):
        for host, uri in (("hv1", "qemu:///system"), ("hv2", second.uri)):
            label = f"upload to {host}"
            samples = repeat(args.runs, lambda uri=uri: upload_run(uri, image, sha256), label)
            results["upload"][host] = median_row(samples)
        # The first up on each host uploads the image into vnode's pool: not part of the rows.
        up_run(2, True, env, wait=False)
        for n in args.sizes:
            for spread in (False, True):
                key = f"{n}-{'two' if spread else 'one'}"
                label = f"N={n} {'two hosts' if spread else 'one host'}"
                results["control_plane"][key] = median_row(
                    repeat(
                        args.runs,
                        lambda n=n, spread=spread: up_run(n, spread, env, False),
                        f"{label} --no-wait",
                    )
                )
                if "ready" not in args.skip:
                    results["ready"][key] = median_row(
                        repeat(
                            args.runs,
                            lambda n=n, spread=spread: up_run(n, spread, env, True),
                            f"{label} ready",
                        )
                    )
        if "warm" not in args.skip:
            measure_warm(args, env, results)
    return results


def template_make(distro: str, host: str, env: dict[str, str]) -> float:
    """Seconds to make the configured shape's template on that host (one boot, a save)."""
    argv = [*VNODE, "template", "make", distro, "--host", host, "--json"]
    start = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"template make on {host} failed: {result.stderr}")
    return seconds


def measure_warm(args: argparse.Namespace, env: dict[str, str], results: dict) -> None:
    for host in ("hv1", "hv2"):
        # Made once: a rerun of the row would only find it made.
        results["template_make"][host] = median_row([template_make(args.distro, host, env)])
    for n in args.sizes:
        for spread in (False, True):
            key = f"{n}-{'two' if spread else 'one'}"
            label = f"N={n} {'two hosts' if spread else 'one host'} --warm"
            results["warm"][key] = median_row(
                repeat(
                    args.runs,
                    lambda n=n, spread=spread: up_run(n, spread, env, True, warm=True),
                    label,
                )
            )
    for host in ("hv1", "hv2"):
        subprocess.run(
            [*VNODE, "template", "remove", args.distro, "--host", host],
            env=env,
            capture_output=True,
            check=False,
        )


def markdown(results: dict) -> str:
    lines = [
        f"# vnode over two hosts ({results['when']})",
        "",
        f"{results['distro']} ({results['image_mib']} MiB image), {results['virt_type']}, "
        f"{results['memory']} MiB per node, {results['cpus']} CPUs shared by both hosts "
        "(the second is a namespace on this machine). Medians (min-max) in seconds.",
        "",
        "| image upload (send + read back + sha256) | seconds |",
        "| --- | --- |",
    ]
    for host, row in results["upload"].items():
        lines.append(f"| {host} | {_cell(row)} |")
    lines += ["", "| N | one host | two hosts | two / one |", "| --- | --- | --- | --- |"]
    sections = (("control_plane", "up --no-wait"), ("ready", "up (ready)"), ("warm", "up --warm"))
    for section, title in sections:
        sizes = sorted({int(key.split("-")[0]) for key in results.get(section, {})})
        for n in sizes:
            one, two = results[section][f"{n}-one"], results[section][f"{n}-two"]
            ratio = two["median"] / one["median"]
            lines.append(f"| {title}, N={n} | {_cell(one)} | {_cell(two)} | {ratio:.2f} |")
    if results.get("template_make"):
        lines += ["", "| template make (one boot, a save) | seconds |", "| --- | --- |"]
        for host, row in results["template_make"].items():
            lines.append(f"| on {host} | {_cell(row)} |")
    return "\n".join(lines) + "\n"


def _cell(row: dict) -> str:
    return f"{row['median']:.2f} ({row['min']:.2f}-{row['max']:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sizes", type=lambda t: [int(p) for p in t.split(",")], default=[2, 4])
    parser.add_argument("--distro", default="d12")
    parser.add_argument("--virt-type", default="qemu", choices=("qemu", "kvm"))
    parser.add_argument("--memory", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--skip", default="", help="comma list: ready, warm")
    args = parser.parse_args()
    args.skip = set(args.skip.split(","))
    results = measure(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "").replace("+0000", "Z")
    (RESULTS / f"multihost-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "multihost.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
