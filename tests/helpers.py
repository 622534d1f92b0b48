"""Test helpers shared by the flow and end-to-end suites (importable: tests/ is on pythonpath)."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from pomona.app import Pomona
from pomona.domain.models import Device, Enrollment, EnrollmentStatus, EnrollmentType
from pomona.testing.pushcert import make_standin_push_cert

CONSOLE_PASSWORD = "console-pass-1"


class ConsoleBrowser:
    """A browser on the console: keeps its cookies and posts the last page's CSRF token."""

    def __init__(self, app: object, lang: str = "en", base_url: str = "https://pomona.test") -> None:
        from starlette.testclient import TestClient

        self.c = TestClient(app, base_url=base_url, headers={"Accept-Language": lang}, follow_redirects=False)  # type: ignore[arg-type]
        self.last = ""

    def close(self) -> None:
        self.c.close()

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.last)
        assert m, self.last[:300]
        return m.group(1)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        r = self.c.get(path, **kw)
        self.last = r.text
        return r

    def post(self, path: str, data: dict[str, str] | None = None, csrf: str | None = None) -> httpx.Response:
        r = self.c.post(path, data={"csrf": self.csrf() if csrf is None else csrf, **(data or {})})
        self.last = r.text
        return r

    def sign_in(self, email: str, password: str = CONSOLE_PASSWORD, code: str = "") -> httpx.Response:
        """The sign-in form posted; a success (303) followed to the page it leads to."""
        self.get("/console/signin")
        r = self.post("/console/signin", {"email": email, "password": password, "code": code})
        if r.status_code == 303:
            r = self.get(r.headers["location"], follow_redirects=True)
        return r

    def must_sign_in(self, email: str) -> None:
        """Sign in with the tests' password, which must succeed (the form answers 303)."""
        self.get("/console/signin")
        r = self.post("/console/signin", {"email": email, "password": CONSOLE_PASSWORD, "code": ""})
        assert r.status_code == 303, r.text[:300]


IN_CI = os.environ.get("CI") == "true"


def missing(what: str) -> None:
    """Fail in CI, skip loudly elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true and {what}", pytrace=False)
    pytest.skip(f"MISSING PART: {what}")


@functools.cache
def push_key() -> Any:
    """One RSA key for the stand-in push certificates that setup_tenant makes (each its own certificate and
    topic): a 2048-bit key costs tens of milliseconds, and nothing checks that two tenants' keys differ."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class TenantSetup:
    name: str
    tenant_id: str
    upn: str
    admin_token: str
    enroll_url: str
    topic: str


def setup_tenant(
    p: Pomona, name: str = "acme", *, uses: int = 10, upn: str | None = None, push: bool = True
) -> TenantSetup:
    """A tenant with a stand-in push certificate, one user and an enrollment link, as an admin would."""
    t = p.admin.create_tenant(name, f"{name}.example")
    topic = ""
    if push:
        cert, key = make_standin_push_cert(key=push_key())
        topic = p.apns.upload(name, cert, key, canary=False).topic
    upn = upn or f"ana@{name}.example"
    p.admin.set_authority(name, "pomona")
    p.policy.set_seats(name, 100)
    p.admin.create_user(name, upn)
    p.policy.licence(name, upn, assign=True)
    admin = p.admin.create_api_token(name).secret
    issued = p.admin.create_enrollment_token(name, upn, uses=uses)
    return TenantSetup(name, t.id, upn, admin, p.enrollment.urls.enroll(issued.secret), topic)


def events(p: Pomona, tenant: str, **filters: Any) -> list[Any]:
    return p.commands.events(tenant, **filters)


def reasons(p: Pomona, tenant: str, **filters: Any) -> list[str]:
    return [e.reason for e in p.commands.events(tenant, **filters) if e.reason]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    database_url: str | None
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(
    data_dir: Path,
    database_url: str | None = None,
    *,
    workers: int = 1,
    port: int | None = None,
    public_url: str | None = None,
    env: dict[str, str] | None = None,
) -> LiveServer:
    """Run `pomona serve` as a real uvicorn process on 127.0.0.1 and wait until it answers. Its public URL
    is its own address unless given (a reverse proxy's); ``env`` adds variables to its environment.
    A port picked here is an ephemeral one that any outgoing connection may take before the server binds
    it: the server refusing it (PORT_UNAVAILABLE) is retried on another, twice."""
    if port is not None:
        return _start_server(data_dir, database_url, workers, port, public_url, env)
    for attempt in range(3):
        try:
            return _start_server(data_dir, database_url, workers, free_port(), public_url, env)
        except RuntimeError as exc:
            if "PORT_UNAVAILABLE" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_server(
    data_dir: Path,
    database_url: str | None,
    workers: int,
    port: int,
    public_url: str | None,
    env: dict[str, str] | None,
) -> LiveServer:
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **(env or {})}
    env.pop("POMONA_DATABASE_URL", None)
    if database_url:
        env["POMONA_DATABASE_URL"] = database_url
    log = data_dir / f"server-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "pomona",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--public-url",
        public_url or url,
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return LiveServer(url, proc, data_dir, database_url, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


# --- the CLI against a test's database ----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def same_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI runs in the test's data folder: its server key opens the secrets the test's server sealed.
    Autouse in the modules that import it (with `cli`)."""
    monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))


def cli(
    monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str, stdin: str | None = None
) -> tuple[int, str]:
    """`pomona ARGS` in this process against the test's database: (exit code, output)."""
    from click.testing import CliRunner

    from pomona.cli.main import main

    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    res = CliRunner().invoke(main, list(args), input=stdin)
    return res.exit_code, res.output


def two_limits(p: Pomona, s: TenantSetup) -> tuple[str, str]:
    """The tenant's user in groups Sales and Staff; "Tight" (limit 1, priority 1) for Sales and "Loose"
    (limit 5, priority 2) for Staff: Tight applies. Their ids."""
    for g in ("Sales", "Staff"):
        p.policy.create_group(s.name, g)
        p.policy.add_member(s.name, g, s.upn)
    tight = p.policy.create_restriction(
        s.name, type_="limit", priority=1, groups=["Sales"], name="Tight", limit=1
    )
    loose = p.policy.create_restriction(
        s.name, type_="limit", priority=2, groups=["Staff"], name="Loose", limit=5
    )
    return tight.id, loose.id


def priorities(p: Pomona, tenant: str) -> dict[str, int | None]:
    """Each restriction's priority by name (None for the Defaults)."""
    rs, _ = p.policy.list_restrictions(tenant)
    return {r.name: None if r.is_default else r.priority for r in rs}


def active_enrollment(
    device: Device, fingerprint: str, started_at: datetime, *, user_id: str | None = None, **more: Any
) -> Enrollment:
    """A storage test's row: ``device``'s active BYOD enrollment, bound to the identity ``fingerprint``."""
    return Enrollment(
        id=str(uuid.uuid4()),
        tenant_id=device.tenant_id,
        device_id=device.id,
        udid=device.udid,
        user_id=user_id,
        status=EnrollmentStatus.ACTIVE,
        type=EnrollmentType.BYOD,
        cert_fingerprint=fingerprint,
        topic="com.apple.mgmt.x",
        started_at=started_at,
        **more,
    )


def insert_old_tenant(conn: Any, tenant_id: str, at: datetime) -> None:
    """A tenant row written with SQL on a database at an older migration (the migration tests: the stores
    speak the newest schema): tenant "acme", no seats, policy version 0."""
    from sqlalchemy import text

    conn.execute(
        text(
            "INSERT INTO tenants (id, name, domain, created_at, ca_cert_pem, ca_key_pem, "
            "licence_seats, policy_version) VALUES (:i, 'acme', 'x.example', :c, :p, :p, 0, 0)"
        ),
        {"i": tenant_id, "c": at, "p": b"pem"},
    )
