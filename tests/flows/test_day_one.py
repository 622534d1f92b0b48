"""A new tenant is ready to enroll once its push certificate is uploaded (issue 11, item 1): `tenant create`
and POST /api/v1/tenants make Pomona its MDM authority with 25 licence seats, `user create` gives a seat
while one is free, and every warning about a link names the command that fixes it, in the CLI and the API
alike."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from helpers import cli, same_data_dir  # noqa: F401
from pomona.app import Pomona, create_app
from pomona.testing.pushcert import make_standin_push_cert
from pomona.testing.virtual_device import VirtualDevice


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


def upload_push(pomona: Pomona, tenant: str) -> None:
    cert, key = make_standin_push_cert()
    pomona.apns.upload(tenant, cert, key, canary=False)


class TestTenantCreate:
    def test_the_cli_sets_the_authority_and_seats(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, pomona: Pomona
    ) -> None:
        """`tenant create` makes Pomona the authority with 25 seats, and says so with the next command."""
        code, out = cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example")
        assert code == 0, out
        assert "pomona apns upload --tenant acme --cert push.pem --key push.key" in out
        t = pomona.admin.get_tenant("acme")
        assert (t.mdm_authority, t.licence_seats) == ("pomona", 25)
        code, out = cli(
            monkeypatch, db_url, "tenant", "create", "beta", "--domain", "b.example", "--seats", "3"
        )
        assert (
            code == 0
            and json.loads(cli(monkeypatch, db_url, "tenant", "list", "--json")[1])[1]["mdm_authority"]
            == "pomona"
        )
        assert pomona.admin.get_tenant("beta").licence_seats == 3

    def test_the_api_sets_the_same_defaults(self, client: TestClient, pomona: Pomona) -> None:
        """POST /api/v1/tenants gives the tenant what `tenant create` gives it; `seats` changes the pool."""
        auth = {"Authorization": f"Bearer {pomona.admin.create_api_token(None).secret}"}
        r = client.post("/api/v1/tenants", json={"name": "acme", "domain": "acme.example"}, headers=auth)
        assert r.status_code == 201, r.text
        assert (r.json()["mdm_authority"], r.json()["licence_seats"]) == ("pomona", 25)
        r = client.post(
            "/api/v1/tenants", json={"name": "b", "domain": "b.example", "seats": 2}, headers=auth
        )
        assert r.json()["licence_seats"] == 2

    def test_the_service_alone_sets_neither(self, pomona: Pomona) -> None:
        """The service's own defaults stay empty: a tenant made without them is refused MDM_AUTHORITY_NOT_SET."""
        pomona.admin.create_tenant("acme", "acme.example")
        pomona.admin.create_user("acme", "ana@acme.example")
        assert pomona.policy.link_check("acme", "ana@acme.example").reason == "MDM_AUTHORITY_NOT_SET"


class TestUserCreate:
    def test_a_new_user_gets_a_seat_and_enrolls(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, pomona: Pomona, client: TestClient
    ) -> None:
        """tenant create, push certificate, user create, enroll-token create: a device enrolls."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example")
        upload_push(pomona, "acme")
        code, out = cli(
            monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example"
        )
        assert code == 0 and "Warning" not in out, out
        assert [u.licensed for u in pomona.admin.list_users("acme")] == [True]
        code, out = cli(
            monkeypatch, db_url, "enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example",
            "--public-url", "https://pomona.test", "--json",
        )  # fmt: skip
        link = json.loads(out)
        assert code == 0 and link["warnings"] == [], out
        VirtualDevice(link["url"], client=client).enroll()  # type: ignore[arg-type]

    def test_no_licence_leaves_the_seat_free(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, pomona: Pomona
    ) -> None:
        """--no-licence creates the user without a seat (and the JSON says so)."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example")
        code, out = cli(
            monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "bo@acme.example",
            "--no-licence", "--json",
        )  # fmt: skip
        assert code == 0 and json.loads(out)["licensed"] is False, out
        code, out = cli(
            monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example", "--json"
        )
        assert json.loads(out)["licensed"] is True, out

    def test_no_free_seat_is_a_warning_naming_the_commands(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str
    ) -> None:
        """With every seat taken the user is created anyway, and the warning names licence set and assign."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example", "--seats", "0")
        code, out = cli(
            monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example"
        )
        assert code == 0 and "Warning [LICENSES_EXHAUSTED]" in out, out
        assert "pomona licence set --tenant acme --seats N" in out
        assert "pomona licence assign --tenant acme --user ana@acme.example" in out

    def test_licence_assign_without_a_seat_names_the_commands(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str
    ) -> None:
        """`licence assign` with every seat taken fails LICENSES_EXHAUSTED naming licence set and remove."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example", "--seats", "0")
        cli(monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example")
        code, out = cli(
            monkeypatch, db_url, "licence", "assign", "--tenant", "acme", "--user", "ana@acme.example"
        )
        assert code == 2 and "Error [LICENSES_EXHAUSTED]" in out, out
        assert "pomona licence set --tenant acme --seats N" in out and "pomona licence remove" in out


class TestLinkWarnings:
    def test_the_cli_warning_names_the_fix(self, monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
        """A link for a tenant without a push certificate names `pomona apns upload ...` in its warning."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example")
        cli(monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example")
        code, out = cli(
            monkeypatch, db_url, "enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example",
            "--public-url", "https://pomona.test",
        )  # fmt: skip
        assert code == 0 and "Warning [APNS_CERT_MISSING]" in out, out
        assert "`pomona apns upload --tenant acme --cert push.pem --key push.key`" in out

    def test_the_api_returns_the_cli_warning(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, pomona: Pomona, client: TestClient
    ) -> None:
        """POST .../enrollment-tokens answers the same warnings as `enroll-token create --json`, in `lang`."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example")
        upload_push(pomona, "acme")
        cli(
            monkeypatch,
            db_url,
            "user",
            "create",
            "--tenant",
            "acme",
            "--upn",
            "bo@acme.example",
            "--no-licence",
        )
        code, out = cli(
            monkeypatch, db_url, "enroll-token", "create", "--tenant", "acme", "--user", "bo@acme.example",
            "--public-url", "https://pomona.test", "--json",
        )  # fmt: skip
        from_cli = json.loads(out)["warnings"]
        assert [w["reason"] for w in from_cli] == ["USER_NOT_LICENSED"]
        assert "pomona licence assign --tenant acme --user bo@acme.example" in from_cli[0]["message"]
        auth = {"Authorization": f"Bearer {pomona.admin.create_api_token('acme').secret}"}
        r = client.post(
            "/api/v1/tenants/acme/enrollment-tokens", json={"upn": "bo@acme.example"}, headers=auth
        )
        assert r.status_code == 201, r.text
        assert r.json()["warnings"] == from_cli
        r = client.post(
            "/api/v1/tenants/acme/enrollment-tokens",
            json={"upn": "bo@acme.example", "lang": "zh-CN"},
            headers=auth,
        )
        [w] = r.json()["warnings"]
        assert w["reason"] == "USER_NOT_LICENSED" and "目前无法注册" in w["message"], w
        assert "pomona licence assign --tenant acme --user bo@acme.example" in w["message"]

    def test_no_warning_when_the_user_can_enroll(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, pomona: Pomona, client: TestClient
    ) -> None:
        """A licensed user of a ready tenant gets a link with an empty warnings list from the API."""
        cli(monkeypatch, db_url, "tenant", "create", "acme", "--domain", "acme.example")
        upload_push(pomona, "acme")
        cli(monkeypatch, db_url, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example")
        auth = {"Authorization": f"Bearer {pomona.admin.create_api_token('acme').secret}"}
        r = client.post(
            "/api/v1/tenants/acme/enrollment-tokens", json={"upn": "ana@acme.example"}, headers=auth
        )
        assert r.status_code == 201 and r.json()["warnings"] == [], r.text
