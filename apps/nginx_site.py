"""docs/nginx-loupe.conf run by Debian's nginx, unprivileged, on loopback ports: for the tests and for
``loupe bench load``. Only the lines marked "test:" change (ports, files, the secret); without single
sign-on its "sso" lines are dropped."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DOCS_CONF = Path(__file__).resolve().parent.parent / "docs" / "nginx-loupe.conf"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def site_config(port: int, app_ports: Sequence[int], htpasswd: Path | None = None, secret: str | None = None) -> str:
    """The documented site for ``app_ports`` (the upstream's processes), with single sign-on when
    ``htpasswd`` and ``secret`` are given."""
    upstream = list(app_ports)
    lines = []
    for line in DOCS_CONF.read_text().splitlines():
        if "# sso" in line and htpasswd is None:
            continue
        if re.search(r"# (sso )?test:", line):
            directive = line.split()[0]
            if directive == "server":
                if not upstream:
                    continue
                line = f"    server 127.0.0.1:{upstream.pop(0)} max_fails=1 fail_timeout=10s;"
            else:
                line = {"listen": f"    listen 127.0.0.1:{port};",
                        "ssl_certificate": "", "ssl_certificate_key": "",
                        "auth_basic_user_file": f"    auth_basic_user_file {htpasswd};",
                        "proxy_set_header": f'        proxy_set_header X-Loupe-Proxy-Secret "{secret}";'}[directive]
        lines.append(line)
    site = "\n".join(lines)
    # no placeholder and no TLS listener left (a port number such as 44313 may hold the digits 443)
    assert "CHANGE-ME" not in site and not re.search(r"\b443\b", site) and (htpasswd is None or secret in site)
    return site


def static_site(port: int, root: Path, access_log: Path, users_file: Path | None = None) -> str:
    """A site serving the files under ``root`` as they are (range requests included), logging each response's
    method, path, status and body bytes to ``access_log``: a stand-in for an object store of COGs.
    ``users_file``: HTTP basic authentication against it (nginx's htpasswd format)."""
    guard = f'auth_basic "loupe"; auth_basic_user_file {users_file};' if users_file else ""
    return (f"log_format loupe_bytes '$request_method $uri $status $body_bytes_sent';\n"
            f"server {{\n    listen 127.0.0.1:{port};\n    root {root};\n"
            f"    access_log {access_log} loupe_bytes;\n    location / {{ {guard} }}\n}}\n")


def bytes_served(access_log: Path, path: str) -> tuple[int, int]:
    """(requests, body bytes) the static site served for ``path``, from its access log."""
    requests = sent = 0
    for line in access_log.read_text().splitlines() if access_log.exists() else []:
        method, uri, _status, size = line.split()
        if uri == path:
            requests += 1
            sent += int(size)
    return requests, sent


@contextmanager
def running_nginx(binary: str, folder: Path, site: str, port: int) -> Iterator[str]:
    """nginx serving ``site`` on ``port``, in the foreground; yields its URL. RuntimeError if it does not start."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loupe.conf").write_text(site)
    temps = " ".join(f"{kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                        "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'};\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; {temps}\n include {folder / 'loupe.conf'}; }}\n")
    process = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                "-e", str(folder / "error.log")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    if process.poll() is not None:
        error_log = folder / "error.log"
        raise RuntimeError(f"nginx did not start: {process.stdout.read().decode()} "
                           f"{error_log.read_text() if error_log.exists() else ''}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
