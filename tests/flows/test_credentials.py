"""Tenant references are unambiguous, and admin tokens and enrollment links can end (security issue 10)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from helpers import TenantSetup, cli, reasons, same_data_dir, setup_tenant  # noqa: F401 - same_data_dir is autouse here
from pomona.app import Pomona, create_app
from pomona.domain.errors import InvalidInputError, TenantNameInvalidError
from pomona.domain.models import Tenant
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def call(
    client: TestClient, token: str, method: str, path: str, **kw: object
) -> tuple[int, dict[str, object]]:
    r = client.request(method, f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, **kw)  # type: ignore[arg-type]
    return r.status_code, (r.json() if r.content else {})


def spellings(tenant_id: str) -> list[str]:
    """Every way a reference can spell a tenant id."""
    return [tenant_id, tenant_id.upper(), tenant_id.replace("-", ""), f" {tenant_id} "]


class TestTenantReferences:
    def test_a_name_of_the_form_of_an_id_is_refused(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A tenant named with another tenant's id (any spelling) is TENANT_NAME_INVALID, via the API too."""
        for name in [acme.tenant_id, acme.tenant_id.replace("-", ""), str(uuid.uuid4())]:
            with pytest.raises(TenantNameInvalidError):
                pomona.admin.create_tenant(name, "evil.example")
        server = pomona.admin.create_api_token(None).secret
        status, body = call(
            client, server, "POST", "/tenants", json={"name": acme.tenant_id, "domain": "e.example"}
        )
        assert (status, body["reason"]) == (422, "TENANT_NAME_INVALID")
        assert [t.name for t in pomona.admin.list_tenants()] == ["acme"]

    @pytest.mark.parametrize("name,domain", [("beta\n", "beta.example"), ("beta", "beta.example\n")])
    def test_a_trailing_newline_is_not_a_name(self, pomona: Pomona, name: str, domain: str) -> None:
        """A name or domain with a trailing newline is refused ("$" in a pattern would let it through)."""
        with pytest.raises(InvalidInputError):
            pomona.admin.create_tenant(name, domain)

    def test_a_legacy_name_of_the_form_of_an_id_captures_nothing(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """Even with a stored tenant named acme's id (from before the rule), acme's calls act on acme."""
        evil_id = str(uuid.uuid4())
        with pomona.db.unit_of_work() as uow:  # as an older release could store it
            uow.tenants.add(
                Tenant(evil_id, acme.tenant_id, "evil.example", datetime.now(UTC), b"not used"), b"not used"
            )
        status, _ = call(
            client, acme.admin_token, "POST", "/tenants/acme/users", json={"upn": "bo@acme.example"}
        )
        assert status == 201
        assert "bo@acme.example" in [u.upn for u in pomona.admin.list_users(acme.tenant_id)]
        assert pomona.admin.list_users(evil_id) == []
        assert pomona.admin.get_tenant(acme.tenant_id).id == acme.tenant_id

    def test_a_tenant_token_never_reaches_another_tenant(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A token of tenant A gets NOT_FOUND for tenant B by name or by any spelling of B's id."""
        other = setup_tenant(pomona, "other")
        for ref in ["other", *spellings(other.tenant_id)]:
            status, body = call(client, acme.admin_token, "GET", f"/tenants/{ref.strip()}/users")
            assert (status, body.get("reason")) == (404, "NOT_FOUND"), ref
            status, body = call(
                client, acme.admin_token, "POST", f"/tenants/{ref.strip()}/users", json={"upn": "x@o.example"}
            )
            assert (status, body.get("reason")) == (404, "NOT_FOUND"), ref
        for ref in ["acme", *spellings(acme.tenant_id)]:
            status, _ = call(client, acme.admin_token, "GET", f"/tenants/{ref.strip()}/users")
            assert status == 200, ref
        assert [u.upn for u in pomona.admin.list_users("other")] == ["ana@other.example"]


class TestAdminTokens:
    def test_revoked_token_is_refused(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`pomona token revoke` ends a token: API_TOKEN_REVOKED (401) with an event; others still work."""
        spare = pomona.admin.create_api_token("acme", "spare").secret
        code, out = cli(monkeypatch, db_url, "token", "list", "--tenant", "acme", "--json")
        assert code == 0, out
        tokens = json.loads(out)
        assert [x["state"] for x in tokens] == ["active", "active"]
        victim = next(x for x in tokens if x["name"] == "admin")
        code, out = cli(monkeypatch, db_url, "token", "revoke", victim["id"], "--json")
        assert (code, json.loads(out)["state"]) == (0, "revoked"), out
        status, body = call(client, acme.admin_token, "GET", "/tenants/acme/users")
        assert (status, body["reason"]) == (401, "API_TOKEN_REVOKED")
        assert call(client, spare, "GET", "/tenants/acme/users")[0] == 200
        assert "API_TOKEN_REVOKED" in reasons(pomona, "acme")
        code, out = cli(monkeypatch, db_url, "token", "list")
        assert code == 0 and "revoked" in out

    def test_expired_token_is_refused(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`token create --expires-in` makes a token that is API_TOKEN_EXPIRED (401) once past its time."""
        code, out = cli(
            monkeypatch, db_url, "token", "create", "--tenant", "acme", "--expires-in", "1h", "--json"
        )
        assert code == 0, out
        made = json.loads(out)
        assert made["expires_at"] is not None
        assert call(client, made["token"], "GET", "/tenants/acme/users")[0] == 200
        with pomona.db.unit_of_work() as uow:  # an hour and a bit later
            uow.conn.execute(  # type: ignore[attr-defined]
                text("UPDATE api_tokens SET expires_at = :t WHERE id = :i"),
                {"t": datetime.now(UTC) - timedelta(seconds=1), "i": made["id"]},
            )
        status, body = call(client, made["token"], "GET", "/tenants/acme/users")
        assert (status, body["reason"]) == (401, "API_TOKEN_EXPIRED")

    def test_tokens_listed_and_revoked_over_the_api(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """A tenant token lists its tenant's tokens (no secrets) and can revoke one; another tenant's is NOT_FOUND."""
        other = setup_tenant(pomona, "other")
        other_id = pomona.admin.list_api_tokens("other")[0].id
        server = pomona.admin.create_api_token(None).secret
        status, made = call(client, server, "POST", "/tenants/acme/tokens", json={"expires_in_seconds": 3600})
        assert status == 201 and made["expires_at"] is not None
        status, made = call(client, server, "POST", "/tenants/acme/tokens")
        assert status == 201 and made["expires_at"] is None
        status, body = call(client, acme.admin_token, "GET", "/tenants/acme/tokens")
        assert status == 200 and acme.admin_token not in json.dumps(body)
        assert call(client, acme.admin_token, "POST", f"/tenants/acme/tokens/{other_id}/revoke")[0] == 404
        assert call(client, other.admin_token, "GET", "/tenants/other/users")[0] == 200
        mine = body["tokens"][0]["id"]  # type: ignore[index]
        status, body = call(client, acme.admin_token, "POST", f"/tenants/acme/tokens/{mine}/revoke")
        assert (status, body["state"]) == (200, "revoked")
        assert (
            call(client, acme.admin_token, "GET", "/tenants/acme/users")[1]["reason"] == "API_TOKEN_REVOKED"
        )


class TestEnrollmentLinks:
    def test_revoked_link_is_refused(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`pomona enroll-token revoke` ends a link: its next use is ENROLLMENT_TOKEN_INVALID, with an event."""
        code, out = cli(monkeypatch, db_url, "enroll-token", "list", "--tenant", "acme", "--json")
        assert code == 0, out
        links = json.loads(out)
        assert [(x["upn"], x["state"]) for x in links] == [("ana@acme.example", "active")]
        code, out = cli(monkeypatch, db_url, "enroll-token", "revoke", "--tenant", "acme", links[0]["id"])
        assert code == 0, out
        with pytest.raises(EnrollmentRefused) as err:
            VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        assert err.value.reason == "ENROLLMENT_TOKEN_INVALID"
        assert "ENROLLMENT_TOKEN_INVALID" in reasons(pomona, "acme")
        code, out = cli(monkeypatch, db_url, "enroll-token", "list", "--tenant", "acme")
        assert code == 0 and "revoked" in out

    def test_links_listed_and_revoked_over_the_api(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup
    ) -> None:
        """The API lists a tenant's links and revokes one; a link of another tenant is NOT_FOUND."""
        other = setup_tenant(pomona, "other")
        theirs = pomona.admin.list_enrollment_tokens("other")[0][0].id
        assert (
            call(client, acme.admin_token, "POST", f"/tenants/acme/enrollment-tokens/{theirs}/revoke")[0]
            == 404
        )
        VirtualDevice(other.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        status, body = call(client, acme.admin_token, "GET", "/tenants/acme/enrollment-tokens")
        assert status == 200
        mine = body["enrollment_tokens"][0]["id"]  # type: ignore[index]
        status, body = call(
            client, acme.admin_token, "POST", f"/tenants/acme/enrollment-tokens/{mine}/revoke"
        )
        assert (status, body["state"]) == (200, "revoked")
        with pytest.raises(EnrollmentRefused):
            VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
