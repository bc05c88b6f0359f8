"""vnode's benchmark: vnode against a bare-QEMU floor, in one run, on the same image.

    .venv/bin/python bench/run.py                # everything, 3 runs each
    .venv/bin/python bench/run.py --runs 5 --sizes 1,2 --skip control-plane

Measures (medians of --runs, with min and max):
- floor: N guests started by plain qemu-system-x86_64 (no libvirt, no vnode) with a plain
  NoCloud seed and DHCP; seconds until every one answers an SSH command;
- vnode: `vnode up` of N nodes, same image, vCPUs and memory; seconds until all are ready,
  and the ratio vnode/floor;
- warm: `vnode up --warm` of N nodes cloned from a template made beforehand (issue 15), the
  ratio warm/floor, and the host memory (QEMU's resident set) N cold and N warm nodes use;
  and the time `vnode template make` takes (one boot of the image, then saved);
- control plane: `vnode up --no-wait` of N nodes until all domains run, and `vnode destroy`;
  beside it, libvirt alone (no vnode) defining and starting N domains from ready disks, as
  they come and gated (started paused, then all resumed), to show what libvirt itself costs;
- warm scale (issue 26): `vnode up --warm` of N nodes (--warm-sizes, once each, the
  template made beforehand): seconds, per node, the QEMU processes' memory right after all
  are ready and 30 s later (proportional set size, so pages KSM merged count once, and
  resident set), and where each clone's seconds go: vnode's side of making it (files,
  reservation, restore, define and hot-plug, from `-v`), the starting gate, the guest's
  identity script (its own uptime, from the console), the rest of the way to an open SSH
  port, and the SSH handshake;
- CLI start-up: `vnode --help` and `vnode list`.

Writes bench/results/<timestamp>.json and bench/results/latest.md. Guests only talk to this
host: the floor uses QEMU's user network with restrict=on (port forward only), vnode an
isolated libvirt network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
VNODE = [sys.executable, "-m", "vnode.cli"]
IMAGE_STORE = Path("/var/lib/vnode/images")
# Domain names are global on a libvirtd: a prefix of one's own (as the tests' VNODE_TEST_LAB)
# keeps a bench run from touching another lab's nodes.
LAB = os.environ.get("VNODE_TEST_LAB", "")


def median_row(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "runs": len(samples),
    }


# --- the floor: plain QEMU ------------------------------------------------------------------


@attrs.frozen
class Variant:
    """A bare-QEMU launch with some of vnode's speed-ups, to measure each one on its own."""

    name: str
    hostkey: bool = False  # a pre-generated ed25519 host key; no key generation at boot
    static: bool = False  # the address in network-config instead of DHCP
    rng: bool = False  # a virtio-rng device
    lean: bool = False  # -nodefaults: no VGA, floppy, cdrom, parallel port


NAIVE = Variant("naive")
VARIANTS = (
    NAIVE,
    Variant("+hostkey", hostkey=True),
    Variant("+static", static=True),
    Variant("+rng", rng=True),
    Variant("+lean", lean=True),
    Variant("all", hostkey=True, static=True, rng=True, lean=True),
)
# QEMU's user network: the guest is 10.0.2.15, the gateway 10.0.2.2, DNS 10.0.2.3.
_STATIC = (
    'version: 2\nethernets:\n  nic:\n    match: {macaddress: "52:54:00:12:34:56"}\n'
    "    addresses: [10.0.2.15/24]\n    routes: [{to: 0.0.0.0/0, via: 10.0.2.2}]\n"
    "    nameservers: {addresses: [10.0.2.3]}\n"
)


def _floor_seed(path: Path, public_key: str, name: str, variant: Variant) -> None:
    """The plainest NoCloud seed: a key for root, DHCP, host keys made at boot; or a variant."""
    from vnode.cloudinit import SeedFiles, write_seed_iso
    from vnode.keys import generate_keypair

    user_data = (
        f"#cloud-config\ndisable_root: false\nssh_authorized_keys: [{json.dumps(public_key)}]\n"
    )
    if variant.hostkey:
        pair = generate_keypair(name)
        user_data += (
            "ssh_deletekeys: true\nssh_genkeytypes: [ed25519]\nssh_keys:\n"
            f"  ed25519_private: {json.dumps(pair.private_openssh)}\n"
            f"  ed25519_public: {json.dumps(pair.public_openssh)}\n"
        )
    meta_data = f"instance-id: {name}-{uuid.uuid4().hex[:8]}\nlocal-hostname: {name}\n"
    network = _STATIC if variant.static else ""
    write_seed_iso(
        path, SeedFiles(user_data=user_data, meta_data=meta_data, network_config=network)
    )


def _ssh_answers(port: int, key: Path) -> bool:
    options = [
        "BatchMode=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=2",
        "LogLevel=ERROR",
    ]
    argv = ["ssh", "-p", str(port), "-i", str(key)]
    for option in options:
        argv += ["-o", option]
    result = subprocess.run(
        [*argv, "root@127.0.0.1", "true"], capture_output=True, timeout=15, check=False
    )
    return result.returncode == 0


def _qemu_argv(
    i: int, port: int, args: argparse.Namespace, work: Path, variant: Variant
) -> list[str]:
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "kvm" if args.virt_type == "kvm" else "tcg",
        "-m",
        str(args.memory),
        "-smp",
        str(args.vcpus),
        "-display",
        "none",
        "-serial",
        f"file:{work / f'floor{i}.log'}",
        "-monitor",
        "none",
        "-drive",
        f"file={work / f'floor{i}.qcow2'},if=virtio,format=qcow2",
        "-drive",
        f"file={work / f'floor{i}.iso'},if=virtio,format=raw,readonly=on",
        "-netdev",
        f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
    ]
    if variant.rng:
        argv += ["-device", "virtio-rng-pci"]
    if variant.lean:
        argv += ["-nodefaults"]
    return argv


def floor_run(
    n: int, args: argparse.Namespace, work: Path, key: Path, pub: str, variant: Variant = NAIVE
) -> float:
    base = IMAGE_STORE / f"{args.distro}.qcow2"
    procs: list[subprocess.Popen] = []
    ports = [args.port_base + i for i in range(n)]
    for i in range(n):
        disk = work / f"floor{i}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)],
            check=True,
        )
        _floor_seed(work / f"floor{i}.iso", pub, f"floor{i}", variant)
    start = time.monotonic()
    try:
        for i, port in enumerate(ports):
            procs.append(
                subprocess.Popen(
                    _qemu_argv(i, port, args, work, variant),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        pending = set(ports)
        while pending:
            if time.monotonic() - start > args.timeout:
                raise TimeoutError(f"floor guests on ports {sorted(pending)} never answered")
            pending = {p for p in pending if not _ssh_answers(p, key)}
            if pending:
                time.sleep(0.5)
        return time.monotonic() - start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for leftover in work.glob("floor*"):
            leftover.unlink()


# --- vnode ----------------------------------------------------------------------------------


@attrs.frozen
class BenchLab:
    env: dict[str, str]  # runs vnode with the lab's config
    network: str  # the lab's isolated libvirt network (made by vnode's first up)


@contextmanager
def bench_lab(args: argparse.Namespace) -> Iterator[BenchLab]:
    """An isolated vnode installation for the benchmark, removed afterwards."""
    token = uuid.uuid4().hex[:6]
    state = Path(f"/var/lib/vnode-bench-{token}")
    state.mkdir(mode=0o755)
    network = f"vnb-{token}"
    config = state / "config.toml"
    config.write_text(
        f'[defaults]\ndistro = "{args.distro}"\nvirt_type = "{args.virt_type}"\n'
        f"memory = {args.memory}\nvcpus = {args.vcpus}\ntimeout = {args.timeout}\n"
        f'[paths]\nstate = "{state}"\nimage_store = "{IMAGE_STORE}"\n'
        f'[[pools]]\nstem = "{LAB}vb"\nmac_prefix = "52:54:00:ef:ef"\n'
        f'[libvirt_network]\nname = "{network}"\nsubnet = "10.232.{args.octet}.0/24"\n'
        'forward = "none"\ndomain = "bench"\n'
    )
    env = {**os.environ, "VNODE_CONFIG": str(config)}
    try:
        yield BenchLab(env=env, network=network)
    finally:
        subprocess.run([*VNODE, "destroy", "--all"], env=env, capture_output=True, check=False)
        for verb in ("net-destroy", "net-undefine"):
            subprocess.run(
                ["virsh", "-q", "-c", "qemu:///system", verb, network],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(state, ignore_errors=True)


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return time.monotonic() - start, result


def vnode_run(
    n: int, env: dict[str, str], *, warm: bool = False, memory: list | None = None
) -> float:
    """`vnode up` of N nodes (``warm``: cloned from the template); appends the nodes' host
    memory in MiB to ``memory`` if given."""
    extra = ["--warm"] if warm else []
    seconds, result = _timed([*VNODE, "up", *extra, *map(str, range(1, n + 1)), "--json"], env)
    if result.returncode != 0:
        raise RuntimeError(f"vnode up failed: {result.stdout}{result.stderr}")
    if warm and any(node.get("boot") != "warm" for node in json.loads(result.stdout)):
        raise RuntimeError(f"vnode up --warm booted cold: {result.stdout}{result.stderr}")
    if memory is not None:
        # The QEMU processes' resident set, summed: what the nodes cost the host.
        memory.append(_memory_mib([node["name"] for node in json.loads(result.stdout)])[1])
    subprocess.run([*VNODE, "destroy", "--all"], env=env, capture_output=True, check=True)
    return seconds


_PHASE = re.compile(r"^\[\s*([\d.]+)s\] (\S+): (.*)$")
_STEP = re.compile(r"clone step\s+node=(\S+) seconds=([\d.]+) step='?([^']+?)'?$")
_APPLIED = re.compile(r"ready as (\S+) \(.*uptime ([\d.]+) -> ([\d.]+)\)")


def _memory_mib(names: list[str]) -> tuple[float, float]:
    """The QEMU processes' proportional and resident set sizes, summed."""
    pss = rss = 0
    for name in names:
        pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return round(pss / 1024, 1), round(rss / 1024, 1)


def warm_scale_run(n: int, env: dict[str, str]) -> dict:
    """`vnode up --warm` of nodes 0..N-1, measured and broken down per step."""
    specs = [str(i) for i in range(n)]
    seconds, result = _timed([*VNODE, "up", "--warm", "-v", *specs, "--json"], env)
    try:
        if result.returncode != 0:
            raise RuntimeError(f"vnode up --warm failed: {result.stdout}{result.stderr}")
        nodes = json.loads(result.stdout)
        if any(node.get("boot") != "warm" for node in nodes):
            raise RuntimeError(f"vnode up --warm booted cold: {result.stdout}{result.stderr}")
        names = [node["name"] for node in nodes]
        ready_pss, ready_rss = _memory_mib(names)
        time.sleep(30)
        later_pss, _ = _memory_mib(names)
        per: dict[str, dict[str, float]] = {name: {} for name in names}
        phases: dict[str, dict[str, float]] = {name: {} for name in names}
        for line in result.stderr.splitlines():
            if step := _STEP.search(line):
                per[step[1]][step[3]] = float(step[2])
            elif phase := _PHASE.match(line.strip()):
                phases[phase[2]].setdefault(phase[3].split(";")[0], float(phase[1]))
        for name in names:
            console = subprocess.run(
                [*VNODE, "log", name], env=env, capture_output=True, text=True, check=False
            ).stdout
            if applied := _APPLIED.search(console):
                per[name]["guest identity script"] = float(applied[3]) - float(applied[2])
            p = phases[name]
            per[name]["starting gate"] = p["booting"] - p["made"]
            per[name]["resume to ssh port open"] = (
                p["ssh handshake"] - p["booting"] - per[name].get("guest identity script", 0.0)
            )
            per[name]["ssh handshake"] = p["ready"] - p["ssh handshake"]
        steps = list(dict.fromkeys(step for row in per.values() for step in row))
        return {
            "n": n,
            "seconds": round(seconds, 2),
            "per_node": round(seconds / n, 2),
            "pss_mib_per_node_ready": round(ready_pss / n, 1),
            "pss_mib_per_node_30s": round(later_pss / n, 1),
            "rss_mib_per_node_ready": round(ready_rss / n, 1),
            "breakdown_median": {
                step: round(statistics.median(row[step] for row in per.values() if step in row), 3)
                for step in steps
            },
            "last_ready": max(p.get("ready", 0.0) for p in phases.values()),
        }
    finally:
        subprocess.run([*VNODE, "destroy", *specs], env=env, capture_output=True, check=False)


def template_run(args: argparse.Namespace, env: dict[str, str]) -> float:
    """`vnode template make` from nothing (any template of the distro removed first)."""
    subprocess.run([*VNODE, "template", "remove", args.distro], env=env, capture_output=True)
    seconds, result = _timed([*VNODE, "template", "make", args.distro], env)
    if result.returncode != 0:
        raise RuntimeError(f"vnode template make failed: {result.stderr}")
    return seconds


def control_plane_run(n: int, env: dict[str, str]) -> tuple[float, float]:
    specs = [str(i) for i in range(n)]
    up, result = _timed([*VNODE, "up", *specs, "--no-wait", "--memory", "256", "--json"], env)
    states = [node["state"] for node in json.loads(result.stdout or "[]")]
    if result.returncode != 0 or states.count("started") != n:
        raise RuntimeError(f"vnode up --no-wait failed: {result.stdout}{result.stderr}")
    down, result = _timed([*VNODE, "destroy", *specs], env)
    if result.returncode != 0:
        raise RuntimeError(f"vnode destroy failed: {result.stderr}")
    return up, down


_FLOOR_DOMAIN = """<domain type="{virt_type}">
  <name>{name}</name>
  <memory unit="MiB">256</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64">hvm</type><boot dev="hd"/></os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/><source file="{disk}"/><target dev="vda" bus="virtio"/>
    </disk>
    <interface type="network"><source network="{network}"/><model type="virtio"/></interface>
    <serial type="pty"><log file="{log}"/></serial>
    <controller type="usb" model="none"/>
    <memballoon model="none"/>
  </devices>
</domain>
"""


def libvirt_floor_run(
    n: int, args: argparse.Namespace, work: Path, network: str, *, gate: bool = False
) -> float:
    """What any libvirt-based tool pays here: define and start N domains from ready disks,
    one thread each, until all run. No vnode code; disks are made before the clock starts.
    ``gate`` starts them paused and resumes them all at the end, as vnode does."""
    import concurrent.futures

    import libvirt

    conn = libvirt.open("qemu:///system")
    base = IMAGE_STORE / f"{args.distro}.qcow2"
    xmls = []
    for i in range(n):
        disk = work / f"lvfloor{i}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)],
            check=True,
        )
        xmls.append(
            _FLOOR_DOMAIN.format(
                virt_type=args.virt_type,
                name=f"{LAB}vbfloor{i:02d}",
                disk=disk,
                network=network,
                log=work / f"lvfloor{i}.log",
            )
        )

    def start(xml: str) -> libvirt.virDomain:
        domain = conn.defineXML(xml)
        domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if gate else 0)
        return domain

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=n)
    begin = time.monotonic()
    try:
        domains = list(pool.map(start, xmls))
        if gate:
            list(pool.map(lambda domain: domain.resume(), domains))
        return time.monotonic() - begin
    finally:
        for i in range(n):
            try:
                domain = conn.lookupByName(f"{LAB}vbfloor{i:02d}")
            except libvirt.libvirtError:
                continue
            if domain.isActive():
                domain.destroy()
            domain.undefine()
        pool.shutdown()
        for leftover in work.glob("lvfloor*"):
            leftover.unlink()


# --- the run --------------------------------------------------------------------------------


def repeat(runs: int, once: Callable[[], float], label: str) -> list[float]:
    samples = []
    for i in range(runs):
        samples.append(once())
        print(f"  {label} run {i + 1}/{runs}: {samples[-1]:.2f}s", file=sys.stderr)
    return samples


def measure(args: argparse.Namespace) -> dict:
    results: dict = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k != "skip"},
        "host": {"cpus": os.cpu_count()},
        "boot": [],
        "template": None,
        "variants": [],
        "control_plane": [],
        "cli": {},
    }
    with tempfile.TemporaryDirectory(dir="/var/lib") as tmp, bench_lab(args) as lab:
        env = lab.env
        work = Path(tmp)
        os.chmod(work, 0o755)
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        pub = key.with_suffix(".pub").read_text().strip()
        if "boot" not in args.skip:
            for n in args.sizes:
                print(f"boot N={n}", file=sys.stderr)
                floor = repeat(args.runs, lambda n=n: floor_run(n, args, work, key, pub), "floor")
                cold_mib: list[float] = []
                ours = repeat(
                    args.runs, lambda n=n, m=cold_mib: vnode_run(n, env, memory=m), "vnode"
                )
                row = {"n": n, "floor": median_row(floor), "vnode": median_row(ours)}
                row["ratio"] = round(row["vnode"]["median"] / row["floor"]["median"], 3)
                row["cold_mib"] = statistics.median(cold_mib)
                if "warm" not in args.skip:
                    if results["template"] is None:
                        print("template make", file=sys.stderr)
                        made = repeat(args.template_runs, lambda: template_run(args, env), "make")
                        results["template"] = median_row(made)
                    warm_mib: list[float] = []
                    warm = repeat(
                        args.runs,
                        lambda n=n, m=warm_mib: vnode_run(n, env, warm=True, memory=m),
                        "warm",
                    )
                    row["warm"] = median_row(warm)
                    row["warm_ratio"] = round(row["warm"]["median"] / row["floor"]["median"], 3)
                    row["warm_mib"] = statistics.median(warm_mib)
                results["boot"].append(row)
                save(results)
        if "variants" not in args.skip:
            for variant in VARIANTS:
                print(f"floor variant {variant.name}", file=sys.stderr)
                samples = repeat(
                    args.runs, lambda v=variant: floor_run(1, args, work, key, pub, v), variant.name
                )
                results["variants"].append({"variant": variant.name, **median_row(samples)})
                save(results)
        if "control-plane" not in args.skip:
            for n in args.cp_sizes:
                print(f"control plane N={n}", file=sys.stderr)
                pairs = [control_plane_run(n, env) for _ in range(args.runs)]
                ups, downs = [p[0] for p in pairs], [p[1] for p in pairs]
                # After vnode's runs: they made the network the floor's domains join.
                floor = [libvirt_floor_run(n, args, work, lab.network) for _ in range(args.runs)]
                gated = [
                    libvirt_floor_run(n, args, work, lab.network, gate=True)
                    for _ in range(args.runs)
                ]
                results["control_plane"].append(
                    {
                        "n": n,
                        "libvirt_floor": median_row(floor),
                        "libvirt_floor_per_node": round(statistics.median(floor) / n, 3),
                        "libvirt_gated": median_row(gated),
                        "libvirt_gated_per_node": round(statistics.median(gated) / n, 3),
                        "up": median_row(ups),
                        "destroy": median_row(downs),
                        "up_per_node": round(statistics.median(ups) / n, 3),
                        "destroy_per_node": round(statistics.median(downs) / n, 3),
                    }
                )
                save(results)
        if "warm-scale" not in args.skip and args.warm_sizes:
            if results["template"] is None:
                made = repeat(args.template_runs, lambda: template_run(args, env), "make")
                results["template"] = median_row(made)
            results["warm_scale"] = []
            for n in args.warm_sizes:
                print(f"warm scale N={n}", file=sys.stderr)
                row = warm_scale_run(n, env)
                print(f"  {row['seconds']}s, {row['per_node']}s per node", file=sys.stderr)
                results["warm_scale"].append(row)
                save(results)
        if "cli" not in args.skip:
            for label, argv in (("--help", ["--help"]), ("list", ["list"])):
                command = [str(REPO / ".venv" / "bin" / "vnode"), *argv]
                samples = [_timed(command, env)[0] for _ in range(max(5, args.runs))]
                results["cli"][label] = median_row(samples)
    return results


def markdown(results: dict) -> str:
    def cell(row: dict) -> str:
        return f"{row['median']:.2f} ({row['min']:.2f}-{row['max']:.2f})"

    s = results["settings"]
    lines = [
        f"# vnode benchmark, {results['when']}",
        "",
        f"distro {s['distro']}, virt type {s['virt_type']}, {s['vcpus']} vCPU, "
        f"{s['memory']} MiB, {results['host']['cpus']} host CPUs, {s['runs']} runs; "
        "seconds as median (min-max).",
        "",
    ]
    if results["boot"]:
        lines += [
            "## Ready over SSH",
            "",
            "| N | floor (plain QEMU) | vnode up | vnode/floor | vnode up --warm | warm/floor "
            "| host MiB cold | host MiB warm |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['n']} | {cell(r['floor'])} | {cell(r['vnode'])} | {r['ratio']:.2f} "
            f"| {_warm_cells(r, cell)} |"
            for r in results["boot"]
        ]
        lines.append("")
    if results.get("template"):
        lines += [
            "## Warm template",
            "",
            "| step | seconds |",
            "| --- | --- |",
            f"| vnode template make {s['distro']} | {cell(results['template'])} |",
            "",
        ]
    if results["variants"]:
        naive = results["variants"][0]["median"]
        lines += [
            "## Each speed-up alone, on bare QEMU (N=1)",
            "",
            "| floor variant | seconds | vs naive |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {r['variant']} | {cell(r)} | {r['median'] - naive:+.2f} |"
            for r in results["variants"]
        ]
        lines.append("")
    if results["control_plane"]:
        lines += [
            "## Control plane",
            "",
            "| N | libvirt alone | per node | libvirt alone, gated | per node "
            "| vnode up --no-wait | per node | vnode destroy | per node |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['n']} | {_floor_cell(r, 'libvirt_floor')} | {_floor_cell(r, 'libvirt_gated')} "
            f"| {cell(r['up'])} | {r['up_per_node']:.3f} | "
            f"{cell(r['destroy'])} | {r['destroy_per_node']:.3f} |"
            for r in results["control_plane"]
        ]
        lines.append("")
    if results.get("warm_scale"):
        lines += [
            "## Warm clones at scale (once each)",
            "",
            "| N | seconds | per node | PSS MiB/node ready | 30 s later | RSS MiB/node |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['n']} | {r['seconds']:.1f} | {r['per_node']:.2f} "
            f"| {r['pss_mib_per_node_ready']:.0f} | {r['pss_mib_per_node_30s']:.0f} "
            f"| {r['rss_mib_per_node_ready']:.0f} |"
            for r in results["warm_scale"]
        ]
        steps = list(dict.fromkeys(k for r in results["warm_scale"] for k in r["breakdown_median"]))
        lines += [
            "",
            "Where a clone's seconds go (median over the clones of each run; the gate is "
            "the wait for the other clones to be made):",
            "",
            "| step | " + " | ".join(f"N={r['n']}" for r in results["warm_scale"]) + " |",
            "| --- |" + " --- |" * len(results["warm_scale"]),
        ]
        lines += [
            f"| {step} | "
            + " | ".join(f"{r['breakdown_median'].get(step, 0):.2f}" for r in results["warm_scale"])
            + " |"
            for step in steps
        ]
        lines.append("")
    if results["cli"]:
        lines += ["## CLI start-up", "", "| command | seconds |", "| --- | --- |"]
        lines += [f"| vnode {k} | {cell(v)} |" for k, v in results["cli"].items()]
        lines.append("")
    return "\n".join(lines)


def _warm_cells(row: dict, cell: Callable[[dict], str]) -> str:
    # Results of older runs (and --skip warm) have no warm columns.
    cold = f"{row['cold_mib']:.0f}" if "cold_mib" in row else "-"
    if "warm" not in row:
        return f"- | - | {cold} | -"
    return f"{cell(row['warm'])} | {row['warm_ratio']:.2f} | {cold} | {row['warm_mib']:.0f}"


def _floor_cell(row: dict, key: str) -> str:
    floor = row.get(key)  # results of older runs have none
    if not floor:
        return "- | -"
    return (
        f"{floor['median']:.2f} ({floor['min']:.2f}-{floor['max']:.2f}) | "
        f"{row[key + '_per_node']:.3f}"
    )


def save(results: dict) -> None:
    """Written after every section, so a late failure keeps what was measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "").replace("+0000", "Z")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(results))


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=_sizes, default=[1, 2, 4])
    parser.add_argument("--cp-sizes", type=_sizes, default=[1, 10, 30])
    parser.add_argument("--distro", default="d12")
    parser.add_argument("--virt-type", default="qemu", choices=("qemu", "kvm"))
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--vcpus", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--port-base", type=int, default=22400)
    parser.add_argument("--octet", type=int, default=77, help="bench network 10.232.N.0/24")
    parser.add_argument(
        "--warm-sizes", type=_sizes, default=[], help="warm scale rows, e.g. 1,2,4,8,16,31"
    )
    parser.add_argument("--template-runs", type=int, default=1, help="times to make the template")
    parser.add_argument(
        "--skip", default="", help="comma list: boot,warm,warm-scale,variants,control-plane,cli"
    )
    args = parser.parse_args()
    args.skip = set(args.skip.split(","))
    results = measure(args)
    save(results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
