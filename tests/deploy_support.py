"""What the tests of deploy/ share: the real tools (systemd-analyze, nginx, caddy, openssl), a test-made
TLS certificate, and the shipped proxy configurations adapted ONLY in their ports, paths and certificate,
each adaptation asserted to have matched (so a change of the shipped file's shape fails here, loudly)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers import missing

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
HOST = "mdm.example.com"  # the name the shipped files and docs/deploy.md use

# Debian's package of each tool (scripts/test installs them: SYSTEM_PACKAGES).
PACKAGES = {
    "systemd-analyze": "systemd",
    "nginx": "nginx",
    "caddy": "caddy",
    "openssl": "openssl",
}


def tool(name: str) -> str:
    """The tool's path; a missing tool fails in CI and skips loudly elsewhere."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        missing(f"{name} is not installed (apt-get install {PACKAGES.get(name, name)})")
    assert found
    return found


def replace_once(text: str, old: str, new: str) -> str:
    """``old`` replaced by ``new``; ``old`` must occur exactly once."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the shipped file"
    return text.replace(old, new)


@dataclass(frozen=True)
class ProxyCert:
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this certificate only."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_cert(folder: Path) -> ProxyCert:
    """A self-signed certificate for mdm.example.com and 127.0.0.1 (openssl, as an admin would make one)."""
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    subprocess.run(
        [
            tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=DNS:{HOST},IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return ProxyCert(cert, key)


# --- nginx ---------------------------------------------------------------------------------------------
NGINX_CERT = f"/etc/letsencrypt/live/{HOST}/fullchain.pem"
NGINX_KEY = f"/etc/letsencrypt/live/{HOST}/privkey.pem"


def nginx_site(*, https_port: int, http_port: int, upstream_port: int, cert: ProxyCert) -> str:
    """deploy/nginx/pomona.conf on test ports, with the test's certificate (IPv4 loopback only)."""
    text = (DEPLOY / "nginx" / "pomona.conf").read_text()
    text = replace_once(text, "    listen [::]:80;\n", "")
    text = replace_once(text, "    listen [::]:443 ssl http2;\n", "")
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = replace_once(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = replace_once(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
    text = replace_once(text, NGINX_CERT, str(cert.cert))
    return replace_once(text, NGINX_KEY, str(cert.key))


def nginx_multi_site(*, https_port: int, http_port: int, backends: list[int], cert: ProxyCert) -> str:
    """deploy/nginx/pomona-multi.conf on test ports, its two backends on 127.0.0.1 (IPv4 loopback only)."""
    text = (DEPLOY / "nginx" / "pomona-multi.conf").read_text()
    text = replace_once(text, "    listen [::]:80;\n", "")
    text = replace_once(text, "    listen [::]:443 ssl http2;\n", "")
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = replace_once(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    first, second = backends
    text = replace_once(text, "server 10.0.0.11:8080 ", f"server 127.0.0.1:{first} ")
    text = replace_once(text, "server 10.0.0.12:8080 ", f"server 127.0.0.1:{second} ")
    text = replace_once(text, NGINX_CERT, str(cert.cert))
    return replace_once(text, NGINX_KEY, str(cert.key))


def nginx_main(prefix: Path, site: Path) -> Path:
    """An nginx.conf in ``prefix`` (pid, logs and temporary files there) that includes ``site``, as
    Debian's /etc/nginx/nginx.conf includes sites-enabled/*."""
    conf = prefix / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may use the test's folders
    conf.write_text(
        f"""{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""
    )
    return conf


# --- Caddy ---------------------------------------------------------------------------------------------
def caddy_config(*, https_port: int, upstream_port: int, cert: ProxyCert) -> str:
    """deploy/caddy/Caddyfile on a test port with the test's certificate instead of ACME; no admin
    endpoint and no redirect listener on port 80 (several tests run at once)."""
    text = (DEPLOY / "caddy" / "Caddyfile").read_text()
    text = replace_once(text, "{\n\tservers {", "{\n\tadmin off\n\tauto_https disable_redirects\n\tservers {")
    text = replace_once(
        text, f"{HOST} {{\n", f"https://127.0.0.1:{https_port} {{\n\ttls {cert.cert} {cert.key}\n"
    )
    return replace_once(text, "reverse_proxy 127.0.0.1:8080", f"reverse_proxy 127.0.0.1:{upstream_port}")


def caddy_env(home: Path) -> dict[str, str]:
    """Caddy's own state (autosave, storage) under ``home``, not the user's."""
    return {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home)}


# --- a proxy process -----------------------------------------------------------------------------------
def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, *, verify: ssl.SSLContext) -> None:
    """Until ``url`` answers 200 through the proxy (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited: {log.read_text() if log.exists() else ''}")
        try:
            if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer: {log.read_text() if log.exists() else ''}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
