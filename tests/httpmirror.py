"""A web server on 127.0.0.1 that plays a distro's download site in tests: files at upstream's
paths, directory listings, Range requests, and faults (interrupted, truncated, slow, ignoring
Range). Nothing leaves the machine."""

from __future__ import annotations

import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs
import pytest


@attrs.define
class Served:
    body: bytes
    # "normal", "ignore-range", "interrupt-once", "truncate", "slow" (a trickle after cut),
    # or "redirect" (302 to ``location``)
    mode: str = "normal"
    cut: int = 0  # where "interrupt-once" and "truncate" stop sending, and "slow" slows down
    requests: int = 0
    location: str = ""


@attrs.frozen
class Logged:
    path: str
    range: str | None
    status: int


class Mirror:
    """A threaded HTTP server on 127.0.0.1 with Range support; logs every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, Served] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def put(self, path: str, body: bytes | str, **how: object) -> None:
        data = body.encode() if isinstance(body, str) else body
        with self.lock:
            self.files[path] = Served(data, **how)  # type: ignore[arg-type]

    def remove(self, path: str) -> None:
        with self.lock:
            self.files.pop(path, None)

    def clear(self) -> None:
        with self.lock:
            self.files.clear()
            self.log.clear()

    def requests_for(self, path: str) -> list[Logged]:
        with self.lock:
            return [entry for entry in self.log if entry.path == path]

    def listing(self, directory: str) -> str:
        with self.lock:
            names = [p[len(directory) :] for p in self.files if p.startswith(directory)]
        # Files directly in the directory, and its subdirectories as "name/".
        entries = sorted({n.split("/", 1)[0] + ("/" if "/" in n else "") for n in names})
        links = "".join(f'<a href="{n}">{n}</a>\n' for n in entries)
        return f'<html><body><a href="?C=M;O=A">Date</a>\n<a href="../">../</a>\n{links}</body>'


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path
            wanted = self.headers.get("Range")
            if path.endswith("/"):
                self._reply(path, wanted, 200, mirror.listing(path).encode(), {})
                return
            with mirror.lock:
                served = mirror.files.get(path)
                if served is not None:
                    served.requests += 1
            if served is None:
                self._reply(path, wanted, 404, b"not here", {})
                return
            if served.mode == "redirect":
                self._reply(path, wanted, 302, b"", {"Location": served.location})
                return
            self._serve(path, wanted, served)

        def _serve(self, path: str, wanted: str | None, served: Served) -> None:
            body, start, status, headers = served.body, 0, 200, {}
            if wanted and served.mode != "ignore-range":
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
                if start >= len(body):
                    self._reply(path, wanted, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            end = len(body)
            if served.mode == "truncate" or (
                served.mode == "interrupt-once" and served.requests == 1
            ):
                end = max(start, served.cut)
            # Content-Length announces the whole rest; the connection closes after `end`.
            headers["Content-Length"] = str(len(body) - start)
            if served.mode == "slow":
                self._reply(path, wanted, status, body[start : served.cut], headers, False)
                self._trickle(body[max(start, served.cut) :])
                return
            self._reply(path, wanted, status, body[start:end], headers, announce=False)

        def _trickle(self, rest: bytes, chunk: int = 16 * 1024) -> None:
            for offset in range(0, len(rest), chunk):
                try:
                    self.wfile.write(rest[offset : offset + chunk])
                    self.wfile.flush()
                except OSError:  # the client went away
                    return
                time.sleep(0.1)

        def _reply(
            self,
            path: str,
            wanted: str | None,
            status: int,
            data: bytes,
            headers: dict[str, str],
            announce: bool = True,
        ) -> None:
            with mirror.lock:
                mirror.log.append(Logged(path, wanted, status))
            self.send_response(status)
            if announce:
                headers = {**headers, "Content-Length": str(len(data))}
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def mirror() -> Iterator[Mirror]:
    served = Mirror()
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two different small qcow2 images and a raw one."""
    work = tmp_path_factory.mktemp("blobs")
    made = {}
    for name, size in (("a", "64M"), ("b", "32M")):
        path = work / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
        made[name] = path.read_bytes()
    made["raw"] = bytes(range(256)) * 4096  # 1 MiB, no qcow2 header
    return made


@pytest.fixture(scope="module")
def tls_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mirror, str]]:
    """A mirror on https://127.0.0.1 with a self-signed certificate, and the certificate's
    file: a client trusts it through SSL_CERT_FILE."""
    work = tmp_path_factory.mktemp("tls")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    served = Mirror(tls)
    served.thread.start()
    yield served, str(cert)
    served.server.shutdown()
    served.server.server_close()
