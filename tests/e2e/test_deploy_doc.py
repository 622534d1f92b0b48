"""docs/deploy.md, run as written: every ```sh block, in order, as root, in a private mount and network
namespace whose /etc, /opt, /usr/local, /var, /run and /root are overlays on a scratch folder (the host
is not changed; the namespace has its own loopback, so ports 80, 443 and 8080 are its own).

What cannot run here, and what the test does in its place (each asserted to be exactly the doc's lines):
- ```sh systemd blocks: there is no systemd as PID 1. For `systemctl enable --now pomona` / `start` /
  `restart` the test runs the unit's ExecStart as its User= with its EnvironmentFile=; for `stop`, it
  stops that process; for `reload nginx`, it starts nginx on the installed configuration; for
  `enable --now pomona-backup.timer`, it runs the backup service's ExecStart lines once, as its User=;
  the others (daemon-reload, status, reload caddy) have no stand-in.
- ```sh certbot: no internet. The test puts a certificate it made where certbot would, and trusts it
  (the namespace's /etc/hosts and CA bundle name mdm.example.com as 127.0.0.1 and trust that cert).
- ```sh postgresql blocks run against the local PostgreSQL (host network, same mount namespace) on a
  scratch role and database named `pomona`.
- `pip install` of the source is run literally with PIP_NO_DEPS set, on the host's network: pip fetches
  only its build backend (setuptools) from the package index; the dependencies come from the test's own
  virtual environment (a .pth file in /opt/pomona), not downloaded each run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_support import HOST, make_cert, tool
from helpers import missing

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
BLOCK = re.compile(r"^```sh( \w+)?\n(.*?)^```", re.S | re.M)
OVERLAID = ("/etc", "/opt", "/usr/local", "/var", "/run", "/root")

# The lines that cannot run here, exactly as the doc shows them.
SYSTEMD_LINES = [
    "systemctl daemon-reload",
    "systemctl enable --now pomona",
    "systemctl status pomona",
    "systemctl reload nginx",
    "systemctl reload caddy",
    "systemctl daemon-reload",
    "systemctl enable --now pomona-backup.timer",
    "systemctl stop pomona",
    "systemctl start pomona",
    "systemctl restart pomona",
]
CERTBOT_LINES = [
    f"certbot certonly --standalone -d {HOST} "
    '--pre-hook "systemctl stop nginx" --post-hook "systemctl start nginx"'
]


@dataclass
class Block:
    kind: str  # "" (run), "systemd", "certbot", "postgresql"
    text: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


def blocks() -> list[Block]:
    return [Block((k or "").strip(), text) for k, text in BLOCK.findall(DOC.read_text("utf-8"))]


class Namespace:
    """A sleeping process in its own mount and network namespaces; commands enter it with nsenter."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "sleep", "600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.2)
        if self.holder.poll() is not None:
            missing("unshare --mount --net is not allowed here (needs root and CAP_SYS_ADMIN)")
        self.home = scratch / "home"
        self.home.mkdir()
        setup = ["ip link set lo up"]
        for i, path in enumerate(OVERLAID):
            up, work = scratch / f"upper{i}", scratch / f"work{i}"
            up.mkdir()
            work.mkdir()
            setup.append(f"mount -t overlay overlay -o lowerdir={path},upperdir={up},workdir={work} {path}")
        self.run("\n".join(setup))

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            # pip installs the source without its dependencies (see the module docstring)
            "PIP_NO_DEPS": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **extra,
        }

    def command(self, script: str, *, net: bool = True) -> list[str]:
        where = ["--mount", "--net"] if net else ["--mount"]
        return ["nsenter", "--target", str(self.holder.pid), *where, "bash", "-e", "-c", script]

    def run(self, script: str, *, net: bool = True, timeout: float = 180) -> str:
        done = subprocess.run(
            self.command(script, net=net), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done.stdout

    def start(self, script: str, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(script), env=self.env(), stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


class Service:
    """What systemd would do with /etc/systemd/system/pomona.service: its ExecStart as its User=, with
    its EnvironmentFile=."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ns.scratch / "pomona-serve.log"

    def start(self) -> None:
        unit = self.ns.run("cat /etc/systemd/system/pomona.service")
        fields = dict(
            line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
        )
        script = (
            f"set -a; . {fields['EnvironmentFile']}; set +a\n"
            f"cd {fields['WorkingDirectory']}\n"
            f"exec setpriv --reuid={fields['User']} --regid={fields['Group']} --init-groups "
            f"{fields['ExecStart']}"
        )
        self.proc = self.ns.start(script, self.log)
        self.ns.run(
            "for i in $(seq 100); do curl -fs http://127.0.0.1:8080/healthz >/dev/null && exit 0; sleep 0.2; done;"
            f" cat {self.log}; exit 1"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None


def source_copy(scratch: Path) -> Path:
    """The checkout's tracked files (what a release archive holds), to appear as /usr/local/src/pomona."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    out = scratch / "source"
    for name in filter(None, files):
        rel = name.decode()
        if not (rel.startswith(("src/", "deploy/")) or rel in ("pyproject.toml", "README.md")):
            continue
        if not (ROOT / rel).is_file():
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, out / rel)
    return out


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    if os.geteuid() != 0:
        missing("docs/deploy.md's commands need root (they create a user and system folders)")
    for name in ("unshare", "nsenter", "setpriv", "runuser", "curl", "python3"):
        if not shutil.which(name):
            missing(f"{name} is not installed")
    for name in ("nginx", "caddy", "systemd-analyze"):
        tool(name)
    space = Namespace(tmp_path)
    try:
        yield space
    finally:
        space.run("nginx -s quit 2>/dev/null || true")
        space.close()


@pytest.fixture
def pg_scratch(pg_admin_url: str) -> Iterator[str]:
    """The role and database `pomona` the doc's PostgreSQL lines name, made for the test and dropped."""
    import psycopg

    from pomona.storage.sql import SqlDatabase

    def admin(*sql: str) -> None:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            for statement in sql:
                conn.execute(statement)  # type: ignore[arg-type]

    admin("DROP DATABASE IF EXISTS pomona WITH (FORCE)", "DROP ROLE IF EXISTS pomona")
    admin("CREATE ROLE pomona LOGIN", "CREATE DATABASE pomona OWNER pomona")
    url = "postgresql://pomona@127.0.0.1:5432/pomona"
    db = SqlDatabase(url)
    db.create_all()
    db.dispose()
    yield url
    admin("DROP DATABASE IF EXISTS pomona WITH (FORCE)", "DROP ROLE IF EXISTS pomona")


class TestDeployDoc:
    def test_the_lines_that_cannot_run_here_are_known(self) -> None:
        """The blocks the test cannot run are exactly the systemctl and certbot lines it knows; every other
        block is run (the next test)."""
        bs = blocks()
        assert [line for b in bs if b.kind == "systemd" for line in b.lines] == SYSTEMD_LINES
        assert [line for b in bs if b.kind == "certbot" for line in b.lines] == CERTBOT_LINES
        assert {b.kind for b in bs} == {"", "systemd", "certbot", "postgresql"}

    def test_every_block_runs(self, ns: Namespace, pg_scratch: str) -> None:
        """From a bare host to a service behind nginx answering over HTTPS at mdm.example.com; Caddy's
        configuration validated; a backup while serving, a restore, an upgrade, each followed by the
        service answering again; the PostgreSQL dump and restore lines against a real database."""
        scratch = ns.scratch
        source = source_copy(scratch)
        cert = make_cert(scratch)
        ns.run(f"mkdir -p /usr/local/src/pomona && mount --bind {source} /usr/local/src/pomona")
        service = Service(ns)
        ran = 0
        try:
            for block in blocks():
                if block.kind == "postgresql":
                    ns.run(block.text, net=False)
                    ran += 1
                    continue
                if block.kind == "certbot":
                    live = f"/etc/letsencrypt/live/{HOST}"
                    ns.run(
                        f"install -d {live}\ninstall -m 0644 {cert.cert} {live}/fullchain.pem\n"
                        f"install -m 0600 {cert.key} {live}/privkey.pem\n"
                        f"echo '127.0.0.1 {HOST}' >> /etc/hosts\n"
                        f"cat {cert.cert} >> /etc/ssl/certs/ca-certificates.crt"
                    )
                    continue
                if block.kind == "systemd":
                    self._stand_in(ns, service, block)
                    continue
                # pip fetches its build backend: the blocks that run it use the host's network
                out = ns.run(block.text, net="pip install" not in block.text)
                ran += 1
                if "python3 -m venv /opt/pomona" in block.text:
                    deps = sysconfig.get_paths()["purelib"]
                    ns.run(
                        f"echo {deps} > $(/opt/pomona/bin/python -c "
                        "'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')/test-deps.pth"
                    )
                if "curl" in block.text:
                    assert json.loads(out) == {"status": "ok"}, out
        finally:
            service.stop()
        assert ran == len([b for b in blocks() if b.kind in ("", "postgresql")])
        # What the blocks left: the key apart, two backups, a restored database that served again.
        listing = ns.run("ls /var/backups/pomona /root/pomona-server.key")
        assert "manual.db" in listing and "before-upgrade.db" in listing and "pomona.dump" in listing
        assert ns.run("stat -c %U:%a /var/lib/pomona /var/lib/pomona/server.key").split() == [
            "pomona:700",
            "pomona:600",
        ]
        # The PostgreSQL lines dumped and restored Pomona's schema, at this version's migration.
        import psycopg

        from pomona.storage.migrate import known_revisions

        with psycopg.connect(pg_scratch) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert row == (known_revisions()[-1],)

    @staticmethod
    def _stand_in(ns: Namespace, service: Service, block: Block) -> None:
        for line in block.lines:
            if line in ("systemctl enable --now pomona", "systemctl start pomona"):
                service.start()
            elif line == "systemctl restart pomona":
                service.stop()
                service.start()
            elif line == "systemctl stop pomona":
                service.stop()
            elif line == "systemctl reload nginx":
                ns.run("nginx")  # the installed configuration, as the nginx service starts it
            elif line == "systemctl enable --now pomona-backup.timer":
                TestDeployDoc._fire_backup_timer(ns)

    @staticmethod
    def _fire_backup_timer(ns: Namespace) -> None:
        """What the timer starts once: pomona-backup.service's ExecStart lines in order, as its User= with
        its EnvironmentFile= (systemd's %% is a %), while the server runs."""
        unit = ns.run("cat /etc/systemd/system/pomona-backup.service")
        fields = [
            line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
        ]
        env_file = next(v for k, v in fields if k == "EnvironmentFile")
        user = next(v for k, v in fields if k == "User")
        for key, command in fields:
            if key != "ExecStart":
                continue
            ns.run(
                f"set -a; . {env_file}; set +a\n"
                f"setpriv --reuid={user} --regid={user} --init-groups {command.replace('%%', '%')}"
            )
        listing = ns.run("ls /var/backups/pomona").split()
        assert "pomona-latest.db" in listing
        assert any(re.fullmatch(r"pomona-\d{4}-\d{2}-\d{2}\.db", name) for name in listing), listing
