"""Spike for issue 15: warm clones on libvirt 9.0 / QEMU 7.2.

Proves (or disproves) the chosen way end to end, outside vnode's scheduler:
  1. boot a NIC-less template from the d12 image with a seed that installs the agent;
  2. wait for "vnode-template-ready" on its console, hot-unplug the seed, save the domain;
  3. for each clone: a qcow2 overlay on the template's (now read-only) disk, an identity tar
     disk, and a per-clone save image whose libvirt header carries the clone's XML (own
     name, UUID, genid, disk, console); restore it paused, hot-plug the NIC (clone's MAC)
     and the identity disk, resume, and time until SSH answers with the clone's host key.

Run as root: .venv/bin/python docs/warm_spike.py [--clones 2] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from vnode.cloudinit import SeedFiles, write_seed_iso
from vnode.disks import create_overlay
from vnode.keys import generate_keypair, write_private

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
ROOT = Path("/var/lib/vnode-wm-spike")
IMAGE = Path("/var/lib/vnode/images/d12.qcow2")
URI = "qemu:///system"
PREFIX = "wmspike"
NET = "wmspike-net"
OCTET = 233

HEADER = struct.Struct("<16sIIIII14I")  # libvirt 9.0: magic, version, data_len, was_running,
# compressed, cookieOffset, unused[15]  (92 + 4 = 96 bytes; checked against a real file below)
MAGIC = b"LibvirtQemudSave"


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def read_save_header(path: Path):
    with path.open("rb") as f:
        raw = f.read(HEADER.size)
        fields = HEADER.unpack(raw)
        magic, version, data_len, was_running, compressed, cookie_off = fields[:6]
        assert magic == MAGIC, magic
        data = f.read(data_len)
    xml_len = cookie_off or data_len
    xml = data[:xml_len].split(b"\0", 1)[0].decode()
    cookie = data[xml_len:].split(b"\0", 1)[0].decode() if cookie_off else ""
    return dict(
        version=version,
        data_len=data_len,
        was_running=was_running,
        compressed=compressed,
        cookie_offset=cookie_off,
        xml=xml,
        cookie=cookie,
        body_offset=HEADER.size + data_len,
    )


def write_clone_save(template_save: Path, dest: Path, xml: str) -> None:
    h = read_save_header(template_save)
    xml_b = xml.encode() + b"\0"
    cookie_b = h["cookie"].encode() + b"\0" if h["cookie_offset"] else b""
    used = len(xml_b) + len(cookie_b)
    data_len = h["data_len"]
    if used > data_len:
        data_len = used + 64 * 1024
    header = HEADER.pack(
        MAGIC,
        h["version"],
        data_len,
        h["was_running"],
        h["compressed"],
        len(xml_b) if cookie_b else 0,
        *([0] * 14),
    )
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out, template_save.open("rb") as src:
        out.write(header + xml_b + cookie_b + b"\0" * (data_len - used))
        src.seek(h["body_offset"])
        remaining = template_save.stat().st_size - h["body_offset"]
        while remaining > 0:
            n = os.copy_file_range(src.fileno(), out.fileno(), remaining)
            if n == 0:
                break
            remaining -= n


def template_xml(name: str, disk: Path, seed: Path, console: Path, mem: int) -> str:
    return f"""<domain type="qemu">
  <name>{name}</name>
  <memory unit="MiB">{mem}</memory>
  <vcpu>1</vcpu>
  <genid/>
  <sysinfo type="smbios"><system><entry name="serial">ds=nocloud</entry></system></sysinfo>
  <os><type arch="x86_64">hvm</type><boot dev="hd"/><bios useserial="yes"/><smbios mode="sysinfo"/></os>
  <features><acpi/><apic/></features>
  <clock offset="utc"/>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap"/>
      <source file="{disk}"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="raw"/>
      <source file="{seed}"/>
      <target dev="vdb" bus="virtio"/>
      <readonly/>
    </disk>
    <serial type="pty"><log file="{console}" append="off"/><target port="0"/></serial>
    <console type="pty"><target type="serial" port="0"/></console>
    <rng model="virtio"><backend model="random">/dev/urandom</backend></rng>
    <controller type="usb" model="none"/>
    <memballoon model="none"/>
  </devices>
</domain>"""


def template_user_data() -> str:
    files = [
        ("/usr/local/sbin/vnode-warm-agent", (TEMPLATES / "warm-agent.sh").read_text(), "0755"),
        (
            "/usr/local/sbin/vnode-template-finish",
            (TEMPLATES / "warm-finish.sh").read_text(),
            "0755",
        ),
        (
            "/etc/udev/rules.d/99-vnode-identity.rules",
            'ACTION=="add", SUBSYSTEM=="block", KERNEL=="vd*", ATTRS{serial}=="vnode-identity", '
            'TAG+="systemd", ENV{SYSTEMD_WANTS}+="vnode-identity.service"\n',
            "0644",
        ),
        (
            "/etc/systemd/system/vnode-identity.service",
            "[Unit]\nDescription=vnode warm clone: apply this clone's identity\n"
            "DefaultDependencies=no\n\n[Service]\nType=oneshot\n"
            "ExecStart=/usr/local/sbin/vnode-warm-agent\n",
            "0644",
        ),
    ]
    import yaml

    doc = {
        "users": [],
        "disable_root": False,
        "ssh_genkeytypes": ["ed25519"],
        "write_files": [
            {"path": p, "content": c, "permissions": m, "owner": "root:root"} for p, c, m in files
        ],
        "runcmd": [
            [
                "sh",
                "-c",
                "setsid /usr/local/sbin/vnode-template-finish </dev/null >/dev/null 2>&1 &",
            ]
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)


def wait_console(path: Path, marker: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and marker in path.read_text(errors="replace"):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise TimeoutError(f"{marker!r} not on {path} after {timeout}s")


def ensure_network(conn):
    try:
        conn.networkLookupByName(NET)
        return
    except libvirt.libvirtError:
        pass
    net = conn.networkDefineXML(
        f"""<network><name>{NET}</name><ip address="10.231.{OCTET}.1" prefix="24"/></network>"""
    )
    net.create()


def make_template(conn, mem: int) -> dict:
    tdir = ROOT / "template"
    if (tdir / "state.save").exists():
        return json.loads((tdir / "template.json").read_text())
    shutil.rmtree(tdir, ignore_errors=True)
    tdir.mkdir(parents=True, mode=0o755)
    name = f"{PREFIX}-tpl"
    disk, seed, console = tdir / "disk.qcow2", tdir / "seed.iso", tdir / "console.log"
    create_overlay(IMAGE, disk, 10)
    meta = f"instance-id: {name}-{uuid.uuid4().hex[:8]}\nlocal-hostname: {name}\n"
    write_seed_iso(seed, SeedFiles(template_user_data(), meta, ""))
    t0 = time.monotonic()
    dom = conn.defineXML(template_xml(name, disk, seed, console, mem))
    dom.create()
    log("template booting")
    took = wait_console(console, "vnode-template-ready", 600)
    log(f"template ready after {took:.1f}s")
    t1 = time.monotonic()
    dom.detachDeviceFlags(
        f'<disk type="file" device="disk"><source file="{seed}"/><target dev="vdb" bus="virtio"/></disk>',
        libvirt.VIR_DOMAIN_AFFECT_LIVE,
    )
    while "vdb" in dom.XMLDesc(0):
        time.sleep(0.2)
    log(f"seed unplugged in {time.monotonic() - t1:.1f}s")
    t2 = time.monotonic()
    dom.save(str(tdir / "state.save"))
    log(f"saved in {time.monotonic() - t2:.1f}s, {(tdir / 'state.save').stat().st_size >> 20} MiB")
    dom.undefine()
    os.chmod(disk, 0o444)
    info = {
        "made_seconds": time.monotonic() - t0,
        "disk": str(disk),
        "save": str(tdir / "state.save"),
    }
    (tdir / "template.json").write_text(json.dumps(info))
    return info


def identity_tar(name: str, mac: str, ip: str, gw: str, host_key, client_pub: str) -> bytes:
    files = {
        "apply": (TEMPLATES / "warm-apply.sh").read_text(),
        "hostname": name,
        "fqdn": f"{name}.lab",
        "machine-id": uuid.uuid4().hex + "\n",
        "boot-id": str(uuid.uuid4()) + "\n",
        "random-seed": secrets.token_bytes(512),
        "authorized_keys": client_pub + "\n",
        "ssh_host_ed25519_key": host_key.private_openssh,
        "ssh_host_ed25519_key.pub": host_key.public_openssh + "\n",
        "mac": mac,
        "net/mode": "static",
        "net/address": f"{ip}/24",
        "net/gateway": gw,
        "net/resolv.conf": f"nameserver {gw}\nsearch lab\n",
        "net/ifupdown": f"auto @NIC@\niface @NIC@ inet static\n    address {ip}/24\n    gateway {gw}\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, content in files.items():
            data = content if isinstance(content, bytes) else content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw + b"\0" * (-len(raw) % (1 << 20))  # whole MiB: a block device's size


def clone_xml(tpl_xml: str, name: str, disk: Path, console: Path) -> str:
    root = ET.fromstring(tpl_xml)
    root.find("name").text = name
    root.find("uuid").text = str(uuid.uuid4())
    genid = root.find("genid")
    genid.text = str(uuid.uuid4())
    for d in root.iter("disk"):
        if d.find("target").get("dev") == "vda":
            d.find("source").set("file", str(disk))
            bs = d.find("backingStore")
            if bs is not None:
                d.remove(bs)
    for s in root.iter("serial"):
        s.find("log").set("file", str(console))
    return ET.tostring(root, encoding="unicode")


def make_clone(conn, info, n: int, client_pub: str, client_priv: Path):
    name = f"{PREFIX}{n:02d}"
    cdir = ROOT / name
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True, mode=0o755)
    mac = f"52:54:00:ee:e9:{n:02x}"
    ip = f"10.231.{OCTET}.{100 + n}"
    t0 = time.monotonic()
    disk = cdir / "disk.qcow2"
    create_overlay(Path(info["disk"]), disk, 10)
    host_key = generate_keypair(name)
    ident = cdir / "identity.tar"
    fd = os.open(ident, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(identity_tar(name, mac, ip, f"10.231.{OCTET}.1", host_key, client_pub))
    tpl = read_save_header(Path(info["save"]))
    xml = clone_xml(tpl["xml"], name, disk, cdir / "console.log")
    save = cdir / "state.save"
    write_clone_save(Path(info["save"]), save, xml)
    t1 = time.monotonic()
    conn.restoreFlags(str(save), None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
    t2 = time.monotonic()
    save.unlink()
    dom = conn.lookupByName(name)
    conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
    dom.attachDeviceFlags(
        f'<interface type="network"><source network="{NET}"/><mac address="{mac}"/>'
        '<model type="virtio"/></interface>',
        libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    dom.attachDeviceFlags(
        f'<disk type="file" device="disk"><driver name="qemu" type="raw"/><source file="{ident}"/>'
        '<target dev="vdc" bus="virtio"/><serial>vnode-identity</serial><readonly/></disk>',
        libvirt.VIR_DOMAIN_AFFECT_LIVE,
    )
    t3 = time.monotonic()
    dom.resume()
    log(f"{name}: files {t1 - t0:.2f}s restore {t2 - t1:.2f}s hotplug {t3 - t2:.2f}s")
    return dict(name=name, ip=ip, mac=mac, host_key=host_key.public_openssh, t0=t0, dom=dom)


def ssh(clone, client_priv: Path, command: str, timeout=5) -> subprocess.CompletedProcess:
    kh = ROOT / f"{clone['name']}.known_hosts"
    kh.write_text(f"{clone['ip']} {' '.join(clone['host_key'].split()[:2])}\n")
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(client_priv),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={kh}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={timeout}",
            "-o",
            "LogLevel=ERROR",
            f"root@{clone['ip']}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 20,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clones", type=int, default=2)
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--cleanup", action="store_true")
    args = ap.parse_args()
    conn = libvirt.open(URI)
    libvirt.registerErrorHandler(lambda *_: None, None)
    if args.cleanup:
        cleanup(conn)
        return
    ROOT.mkdir(mode=0o755, exist_ok=True)
    ensure_network(conn)
    client_priv = ROOT / "id_ed25519"
    if not client_priv.exists():
        pair = generate_keypair("spike")
        write_private(client_priv, pair.private_openssh)
        (ROOT / "id_ed25519.pub").write_text(pair.public_openssh + "\n")
    client_pub = (ROOT / "id_ed25519.pub").read_text().strip()
    info = make_template(conn, args.mem)
    clones = [make_clone(conn, info, n + 1, client_pub, client_priv) for n in range(args.clones)]
    for c in clones:
        while True:
            r = ssh(c, client_priv, "hostname", timeout=10)
            if r.returncode == 0:
                log(
                    f"{c['name']}: ssh ready {time.monotonic() - c['t0']:.1f}s after its start: {r.stdout.strip()}"
                )
                break
            if time.monotonic() - c["t0"] > 120:
                log(f"{c['name']}: not ready: {r.stderr.strip()}")
                print((ROOT / c["name"] / "console.log").read_text()[-2000:])
                break
            time.sleep(0.3)
    probe = (
        "hostname; cat /sys/class/net/*/address | grep -v 00:00:00:00:00:00; "
        "ip -4 -o addr show scope global | awk '{print $4}'; cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2; "
        "cat /etc/machine-id; cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s.%N; "
        "ls /etc/ssh/; cat /root/.ssh/authorized_keys | cut -c1-40; uname -r; ls /sys/bus/acpi/devices/ | grep -i vmgen || echo no-vmgenid-acpi; "
        "dmesg | grep -i -E 'vmgenid|crng|random' | tail -3"
    )
    for c in clones:
        r = ssh(c, client_priv, probe, timeout=10)
        log(f"{c['name']} host={time.time():.2f}\n{r.stdout}{r.stderr}")
    if not args.keep:
        cleanup(conn, keep_template=True)


def cleanup(conn, keep_template=False):
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(PREFIX):
            if dom.isActive():
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    for p in ROOT.glob(f"{PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    if not keep_template:
        try:
            net = conn.networkLookupByName(NET)
            net.destroy()
            net.undefine()
        except libvirt.libvirtError:
            pass
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
