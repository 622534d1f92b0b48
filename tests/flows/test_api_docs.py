"""The admin API's documentation through the real ASGI app: the /api/v1/docs page loads Swagger UI from
Pomona itself (nothing from another host), and the OpenAPI document declares the bearer scheme, describes
every operation and its error answers, and lists the command types."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pomona.app import Pomona, Settings, build, create_app
from pomona.protocol.command import COMMAND_TYPES

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    p: Pomona = build(Settings(data_dir=tmp_path, public_url="https://pomona.test"))
    try:
        with TestClient(create_app(pomona=p, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
            yield c
    finally:
        p.close()


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


class TestDocsPage:
    def test_page_names_no_other_host(self, client: TestClient) -> None:
        """The docs page is HTML whose every URL is on Pomona itself (no CDN)."""
        r = client.get("/api/v1/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert re.findall(r"https?://", r.text) == []
        assert "cdn" not in r.text.lower()

    def test_assets_are_served(self, client: TestClient) -> None:
        """Every script and stylesheet the docs page names is answered 200 by Pomona, non-empty."""
        page = client.get("/api/v1/docs").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert {a.rsplit("/", 1)[-1] for a in assets} >= {
            "swagger-ui.css",
            "swagger-ui-bundle.js",
            "pomona-init.js",
        }
        for a in assets:
            r = client.get(a)
            assert r.status_code == 200 and len(r.content) > 100, a

    def test_swagger_ui_sends_nothing_elsewhere(self, client: TestClient) -> None:
        """Our start-up script turns off Swagger UI's validator badge (which calls validator.swagger.io)."""
        page = client.get("/api/v1/docs").text
        init = next(a for a in re.findall(r'src="([^"]+)"', page) if a.endswith("pomona-init.js"))
        assert "validatorUrl: null" in client.get(init).text


class TestOpenApiDocument:
    def test_bearer_scheme_is_declared(self, spec: dict[str, Any]) -> None:
        """A bearer security scheme exists and every operation but /healthz requires it."""
        schemes = spec["components"]["securitySchemes"]
        assert any(s == {**s, "type": "http", "scheme": "bearer"} for s in schemes.values())
        for name, op in _operations(spec):
            if name == "GET /healthz":
                assert "security" not in op
            else:
                assert op.get("security"), name

    def test_every_operation_has_summary_and_description(self, spec: dict[str, Any]) -> None:
        """Every operation has a written summary and description (not FastAPI's name-derived title)."""
        ops = list(_operations(spec))
        assert len(ops) >= 40
        for name, op in ops:
            assert op.get("summary") and len(op.get("description", "")) > 20, name

    def test_error_answers_are_documented(self, spec: dict[str, Any]) -> None:
        """Authenticated operations document 401/403/404/409/413/422 as {reason, message, request_id}."""
        error = spec["components"]["schemas"]["ApiError"]
        assert set(error["required"]) == {"reason", "message", "request_id"}
        for name, op in _operations(spec):
            if name == "GET /healthz":
                continue
            for code in ("401", "403", "404", "409", "413", "422"):
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ApiError", (name, code)

    def test_enqueue_lists_the_command_types(self, spec: dict[str, Any]) -> None:
        """The enqueue body's request_type is an enum of exactly the typed commands."""
        op = spec["paths"]["/api/v1/tenants/{tenant}/commands"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        request_type = spec["components"]["schemas"][ref]["properties"]["request_type"]
        assert sorted(request_type["enum"]) == sorted(COMMAND_TYPES)

    def test_common_calls_have_examples(self, spec: dict[str, Any]) -> None:
        """Create tenant, user, enrollment link, enqueue and diagnose bodies carry examples."""
        schemas = spec["components"]["schemas"]
        for name in ("TenantIn", "UserIn", "EnrollTokenIn", "CommandIn", "DiagnoseIn"):
            assert schemas[name].get("examples"), name

    def test_examples_are_accepted(self, client: TestClient) -> None:
        """The create-tenant example works as written with a server-wide token (the examples are real)."""
        spec = client.get("/api/v1/openapi.json").json()
        example = spec["components"]["schemas"]["TenantIn"]["examples"][0]
        p: Pomona = client.app.pomona  # type: ignore[attr-defined]
        secret = p.admin.create_api_token(None, "docs").secret
        r = client.post("/api/v1/tenants", json=example, headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 201, r.text

    def test_success_examples_match_real_answers(self, client: TestClient) -> None:
        """The documented answers of create tenant, user and enrollment link have the real answers' keys."""
        spec = client.get("/api/v1/openapi.json").json()
        p: Pomona = client.app.pomona  # type: ignore[attr-defined]
        auth = {"Authorization": f"Bearer {p.admin.create_api_token(None, 'docs').secret}"}
        p.policy.set_seats(
            client.post(
                "/api/v1/tenants", json={"name": "acme", "domain": "acme.example"}, headers=auth
            ).json()["id"],
            5,
        )
        calls = [
            ("/api/v1/tenants", {"name": "beta", "domain": "beta.example"}),
            ("/api/v1/tenants/{tenant}/users", {"upn": "ana@acme.example", "licensed": True}),
            ("/api/v1/tenants/{tenant}/enrollment-tokens", {"upn": "ana@acme.example"}),
        ]
        for path, body in calls:
            r = client.post(path.replace("{tenant}", "acme"), json=body, headers=auth)
            assert r.status_code == 201, r.text
            example = spec["paths"][path]["post"]["responses"]["201"]["content"]["application/json"][
                "example"
            ]
            assert set(example) == set(r.json()), path

    def test_auth_still_refuses_without_token(self, client: TestClient) -> None:
        """Declaring the scheme changed nothing at run time: no token is 401 API_AUTH_FAILED in our shape."""
        r = client.get("/api/v1/tenants")
        assert r.status_code == 401
        assert r.json()["reason"] == "API_AUTH_FAILED" and r.json()["request_id"]
        r = client.get("/api/v1/tenants", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401 and r.json()["reason"] == "API_AUTH_FAILED"
