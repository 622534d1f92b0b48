"""State shared between processes (issue 14): two app instances on one database, as two workers or two
hosts are, share the portal's sign-in limit, its TOTP replay refusal, and each tenant's SCEP RA."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from helpers import make_standin_push_cert, setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.protocol import cms
from pomona.services.jobs import Background, JobRunner, LeaderLease, SingletonJob
from pomona.services.portal import totp_now
from pomona.testing.virtual_device import VirtualDevice

BASE = "https://pomona.test"
PASSWORD = "portal-pass-1"
PIA = "pia@acme.example"


@pytest.fixture
def twin(db_url: str, tmp_path: Path, pomona: Pomona) -> Iterator[Pomona]:
    """A second app instance on the same database and data folder (its own engine, caches, limiter)."""
    p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url=BASE))
    yield p
    p.close()


class Browser:
    def __init__(self, app: object) -> None:
        self.c = TestClient(app, base_url=BASE)  # type: ignore[arg-type]
        self.last = ""

    def get(self, path: str) -> Any:
        r = self.c.get(f"/portal/acme{path}")
        self.last = r.text
        return r

    def post(self, path: str, data: dict[str, str]) -> Any:
        m = re.search(r'"X-CSRF-Token": "([^"]+)"', self.last)
        assert m, self.last[:300]
        r = self.c.post(f"/portal/acme{path}", data={"csrf": m.group(1), **data})
        self.last = r.text
        return r

    def sign_in(self, password: str = PASSWORD) -> Any:
        self.get("/signin")
        return self.post("/signin", {"upn": PIA, "password": password})


@pytest.fixture
def browsers(pomona: Pomona, twin: Pomona) -> Iterator[tuple[Browser, Browser]]:
    setup_tenant(pomona, push=False)
    pomona.admin.create_user("acme", PIA, password=PASSWORD)
    pomona.policy.licence("acme", PIA, assign=True)
    a, b = Browser(create_app(pomona=pomona, eager=False)), Browser(create_app(pomona=twin, eager=False))
    yield a, b
    a.c.close()
    b.c.close()


def test_sign_in_limit_is_shared(browsers: tuple[Browser, Browser]) -> None:
    """Five failures on one instance and five on the other use up the ten tries on both."""
    a, b = browsers
    for browser in (a, b):
        for _ in range(5):
            assert browser.sign_in("wrong-password").status_code == 401
    for browser in (a, b):
        r = browser.sign_in()
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_totp_code_is_refused_on_the_other_instance(
    pomona: Pomona, browsers: tuple[Browser, Browser]
) -> None:
    """A TOTP code accepted by one instance is a replay on the other."""
    a, b = browsers
    pomona.policy.set_user_flags("acme", PIA, mfa_required=True)
    r = a.sign_in()
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', r.text)
    assert secret
    code = totp_now(secret.group(1), pomona.clock.now())
    assert a.post("/mfa", {"code": code}).url.path == "/portal/acme/devices"
    r = b.sign_in()
    assert r.url.path == "/portal/acme/mfa"
    assert b.post("/mfa", {"code": code}).status_code == 401


def split(first: Any, second: Any) -> Any:
    """An ASGI app sending GetCACert to ``first`` and every other request to ``second``, as a load
    balancer may."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if b"operation=GetCACert" in scope.get("query_string", b""):
            await first(scope, receive, send)
        else:
            await second(scope, receive, send)

    return app


def test_p256_tenant_has_one_ra_for_every_instance(pomona: Pomona, twin: Pomona) -> None:
    """Both instances answer a P-256 tenant's GetCACert with the same RA, and a request enveloped to
    the RA one instance gave is decrypted by the other: the device enrolls."""
    t = pomona.admin.create_tenant("acme", "acme.example", key_type="p256")
    pomona.apns.upload("acme", *make_standin_push_cert(), canary=False)
    pomona.admin.set_authority("acme", "pomona")
    pomona.policy.set_seats("acme", 10)
    pomona.admin.create_user("acme", PIA)
    pomona.policy.licence("acme", PIA, assign=True)
    a, b = create_app(pomona=pomona, eager=False), create_app(pomona=twin, eager=False)
    answers = []
    for app in (a, b):
        client = TestClient(app, base_url=BASE)  # type: ignore[arg-type]
        r = client.get(f"/scep/{t.id}", params={"operation": "GetCACert"})
        assert r.headers["content-type"] == "application/x-x509-ca-ra-cert"
        answers.append(r.content)
    assert answers[0] == answers[1]
    assert len(cms.load_certs_only(answers[0])) == 2
    with pomona.db.engine.connect() as conn:
        q = text("SELECT scep_ra_key_pem FROM tenants WHERE id = :i")
        stored = bytes(conn.execute(q, {"i": t.id}).scalar_one())
    assert pomona.db.sealer is not None and pomona.db.sealer.is_sealed(stored)  # sealed like the CA key
    url = pomona.enrollment.urls.enroll(pomona.admin.create_enrollment_token("acme", PIA).secret)
    device = VirtualDevice(url, client=TestClient(split(a, b), base_url=BASE))
    device.enroll()
    assert device.identity_cert is not None


async def _noop() -> None:
    return None


def test_only_the_lease_holder_runs_a_singleton_job(pomona: Pomona, twin: Pomona) -> None:
    """Two instances' schedulers on one database: the singleton job runs in one of them, never both."""
    runs: dict[str, int] = {"a": 0, "b": 0}

    def scheduler(p: Pomona, who: str) -> Background:
        def job() -> None:
            runs[who] += 1

        return Background(
            jobs=JobRunner(),
            push=p.push,
            close_gateway=_noop,
            health_round=lambda: None,
            push_worker=True,
            health_interval=0,
            leader=LeaderLease(p.db, p.clock, ttl=3.0),
            singletons=[SingletonJob("probe", 0.05, job)],
        )

    async def both() -> tuple[bool, bool]:
        a, b = scheduler(pomona, "a"), scheduler(twin, "b")
        await a.start()
        await asyncio.sleep(0.3)  # a takes the lease first
        await b.start()
        await asyncio.sleep(1.5)
        leads = a.leads("probe"), b.leads("probe")
        await a.stop()
        await b.stop()
        return leads

    assert asyncio.run(both()) == (True, False)
    assert runs["a"] > 0 and runs["b"] == 0
