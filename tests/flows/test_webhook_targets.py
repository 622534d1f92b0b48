"""Webhook targets must be public addresses (blind SSRF), unless the operator allows private ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, Settings, build, create_app

FINDING = [{"code": "APNS_CERT_EXPIRING", "severity": "warning", "facts": {}}]


class Receiver:
    """A local webhook receiver that counts what it is sent."""

    def __init__(self) -> None:
        self.hits: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                outer.hits.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona, push=False)


def put_webhook(client: TestClient, s: TenantSetup, url: str) -> object:
    return client.put(
        f"/api/v1/tenants/{s.name}/webhook",
        json={"url": url, "secret": "s3cret-s3cret-s3cret"},
        headers={"Authorization": f"Bearer {s.admin_token}"},
    )


class TestWebhookTargets:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/hook",
            "https://10.1.2.3/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://localhost/hook",
            "http://0.0.0.0/hook",
        ],
    )
    def test_non_public_targets_are_refused(self, client: TestClient, acme: TenantSetup, url: str) -> None:
        """Loopback, metadata, private and mapped addresses (and names resolving to them) are refused with
        WEBHOOK_TARGET_REFUSED."""
        r = put_webhook(client, acme, url)
        assert (r.status_code, r.json()["reason"]) == (422, "WEBHOOK_TARGET_REFUSED")  # type: ignore[attr-defined]

    def test_a_public_target_is_accepted(self, client: TestClient, acme: TenantSetup) -> None:
        """A public address is accepted."""
        r = put_webhook(client, acme, "https://192.0.32.10/hook")
        assert r.status_code == 200, r.text  # type: ignore[attr-defined]

    def test_a_name_resolving_to_loopback_is_refused_at_delivery(
        self, pomona: Pomona, acme: TenantSetup, receiver: Receiver
    ) -> None:
        """A webhook stored before the check (or whose name now resolves to loopback) is checked again at
        delivery: nothing is sent, and the refusal is recorded with its reason."""
        with pomona.db.unit_of_work() as uow:
            uow.webhooks.set_webhook(
                acme.tenant_id,
                f"http://localhost:{receiver.port}/hook",
                pomona.apns.kit.seal(b"s3cret-s3cret-s3cret", f"webhook:{acme.tenant_id}"),
                pomona.clock.now(),
            )
        out = pomona.notifier.notify(acme.tenant_id, FINDING)
        assert out["status"] == "failed" and "WEBHOOK_TARGET_REFUSED" in out["error"]
        assert receiver.hits == []
        assert pomona.commands.events(acme.name, reason="WEBHOOK_TARGET_REFUSED")

    def test_operator_allows_private_targets(self, db_url: str, tmp_path: Path, receiver: Receiver) -> None:
        """With POMONA_WEBHOOK_ALLOW_PRIVATE a local receiver is set and delivered to."""
        p = build(
            Settings(
                data_dir=tmp_path,
                database_url=db_url,
                public_url="https://pomona.test",
                webhook_allow_private=True,
            )
        )
        try:
            s = setup_tenant(p, push=False)
            p.notifier.configure(s.name, f"http://localhost:{receiver.port}/hook", "s3cret-s3cret-s3cret")
            out = p.notifier.notify(s.tenant_id, FINDING)
            assert out["status"] == "delivered", out
            assert len(receiver.hits) == 1
        finally:
            p.close()


class TestPinnedConnection:
    def test_the_connection_goes_to_the_checked_address(self, receiver: Receiver) -> None:
        """The poster connects to the address it resolved and checked (never resolving again), and sends
        the name as the Host header."""
        from pomona.push.webhooks import HttpWebhookPoster

        seen: list[str] = []

        def resolve(host: str, port: int) -> list[str]:
            seen.append(host)
            return ["127.0.0.1"]

        poster = HttpWebhookPoster(allow_private=True, resolve=resolve)
        status = poster.post(f"http://hook.invalid:{receiver.port}/x", b"{}", {}, 5.0)
        assert status == 204 and seen == ["hook.invalid"] and len(receiver.hits) == 1

    def test_every_resolved_address_must_be_public(self) -> None:
        """A name resolving to one public and one private address is refused (no address is picked)."""
        from pomona.domain.errors import WebhookTargetError
        from pomona.push.webhooks import HttpWebhookPoster

        poster = HttpWebhookPoster(resolve=lambda host, port: ["192.0.32.10", "10.0.0.5"])
        with pytest.raises(WebhookTargetError):
            poster.post("https://hook.invalid/x", b"{}", {}, 5.0)
