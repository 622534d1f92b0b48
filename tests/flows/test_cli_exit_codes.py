"""The CLI's exit codes tell a script what happened (docs/cli.md), and bad input is named, not accepted
silently: webhook test, enroll-token create (issue 11, items 7 and 9)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import free_port, setup_tenant
from pomona.app import Settings, build
from pomona.cli.main import main


class Receiver:
    """A local webhook receiver answering every POST with one status."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(status)
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
def env(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[str]:
    """The CLI on the test's database and data folder; a tenant `acme` set up (licensed user ana)."""
    monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    monkeypatch.setenv("POMONA_WEBHOOK_ALLOW_PRIVATE", "true")
    p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url="https://mdm.acme.example"))
    try:
        setup_tenant(p)
        p.admin.create_user("acme", "bo@acme.example")  # not licensed
    finally:
        p.close()
    yield db_url


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


def set_hook(url: str) -> None:
    code, out, err = cli(
        "webhook", "set", "--tenant", "acme", "--url", url, "--secret", "s3cret-s3cret-s3cret"
    )
    assert code == 0, out + err


class TestWebhookTest:
    def test_no_webhook_is_a_failure(self, env: str) -> None:
        """With no webhook set, `webhook test` exits 2 with NOT_FOUND and names the command that sets one."""
        code, out, err = cli("webhook", "test", "--tenant", "acme")
        assert code == 2 and "[NOT_FOUND]" in err and "webhook set" in err, out + err
        assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1

    def test_an_http_error_exits_1_with_the_status(self, env: str) -> None:
        """A receiver answering 500 makes `webhook test` exit 1 with WEBHOOK_DELIVERY_FAILED and HTTP 500."""
        r = Receiver(500)
        try:
            set_hook(f"http://127.0.0.1:{r.port}/hook")
            code, out, err = cli("webhook", "test", "--tenant", "acme")
        finally:
            r.close()
        assert code == 1 and "[WEBHOOK_DELIVERY_FAILED]" in err and "HTTP 500" in err, out + err
        assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1

    def test_a_network_error_exits_1_with_the_error(self, env: str) -> None:
        """Nobody listening makes `webhook test` exit 1, naming the connection error (JSON for scripts)."""
        set_hook(f"http://127.0.0.1:{free_port()}/hook")
        code, out, _ = cli("webhook", "test", "--tenant", "acme", "--json")
        body = json.loads(out)
        assert code == 1 and body["reason"] == "WEBHOOK_DELIVERY_FAILED", out
        assert "Connect" in body["message"], body

    def test_show_lists_the_deliveries(self, env: str) -> None:
        """`webhook show` names the URL and lists each delivery with its HTTP status, newest first."""
        r = Receiver(500)
        try:
            set_hook(f"http://127.0.0.1:{r.port}/hook")
            cli("webhook", "test", "--tenant", "acme")
        finally:
            r.close()
        code, out, _ = cli("webhook", "show", "--tenant", "acme")
        assert code == 0 and f"127.0.0.1:{r.port}/hook" in out and "500" in out and "failed" in out, out
        body = json.loads(cli("webhook", "show", "--tenant", "acme", "--json")[1])
        assert [(d["status"], d["http_status"]) for d in body["deliveries"]] == [("failed", 500)]
        assert "secret" not in json.dumps(body)

    def test_a_delivery_exits_0(self, env: str) -> None:
        """A receiver answering 204 makes `webhook test` exit 0."""
        r = Receiver(204)
        try:
            set_hook(f"http://127.0.0.1:{r.port}/hook")
            code, out, err = cli("webhook", "test", "--tenant", "acme")
        finally:
            r.close()
        assert code == 0 and "delivered" in out, out + err


class TestEnrollmentLinks:
    def test_a_public_url_without_a_scheme_is_refused(self, env: str) -> None:
        """enroll-token create --public-url mdm.acme.example exits 2 with INVALID_INPUT and prints no link."""
        code, out, err = cli(
            "enroll-token",
            "create",
            "--tenant",
            "acme",
            "--user",
            "ana@acme.example",
            "--public-url",
            "mdm.acme.example",
        )
        assert code == 2 and "[INVALID_INPUT]" in err and "https://" in err, out + err
        assert "/enroll/" not in out

    def test_plain_http_off_this_machine_is_warned(self, env: str) -> None:
        """A link on a plain http:// public URL of another host is created, with a warning on stderr."""
        code, out, err = cli(
            "enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example",
            "--public-url", "http://mdm.acme.example",
        )  # fmt: skip
        assert code == 0 and out.startswith("http://mdm.acme.example/enroll/"), out + err
        assert "http://mdm.acme.example" in err and "Warning" in err

    def test_loopback_http_is_not_warned(self, env: str) -> None:
        """http://127.0.0.1 (the demo's, the tests') gets no warning."""
        code, out, err = cli(
            "enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example",
            "--public-url", "http://127.0.0.1:8080",
        )  # fmt: skip
        assert code == 0 and "Warning" not in err, out + err

    def test_a_link_for_a_user_who_cannot_enroll_is_warned(self, env: str) -> None:
        """A link for an unlicensed user is created, and the warning names USER_NOT_LICENSED (JSON too)."""
        code, out, err = cli("enroll-token", "create", "--tenant", "acme", "--user", "bo@acme.example")
        assert code == 0 and "/enroll/" in out, out + err
        assert "Warning [USER_NOT_LICENSED]" in err and "policy explain" in err, err
        code, out, _ = cli(
            "enroll-token", "create", "--tenant", "acme", "--user", "bo@acme.example", "--json"
        )
        assert [w["reason"] for w in json.loads(out)["warnings"]] == ["USER_NOT_LICENSED"]

    def test_a_user_who_can_enroll_gets_no_warning(self, env: str) -> None:
        """A link for a licensed, enabled user on an https URL prints no warning."""
        code, out, err = cli(
            "enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example", "--json"
        )
        assert code == 0 and json.loads(out)["warnings"] == [], out + err

    def test_the_warning_is_in_chinese(self, env: str) -> None:
        """In zh-CN the warning and the reason's title are Chinese."""
        from pomona.i18n import set_process_lang

        previous = set_process_lang("zh-CN")
        try:
            code, out, err = cli("enroll-token", "create", "--tenant", "acme", "--user", "bo@acme.example")
        finally:
            set_process_lang(previous)
        assert code == 0 and "警告 [USER_NOT_LICENSED]" in err and "目前无法注册" in err, err


class TestPublicUrl:
    def test_set_public_url_warns_on_plain_http(self, env: str) -> None:
        """`server set-public-url http://mdm.acme.example` records it and warns; https:// does not warn."""
        code, out, err = cli("server", "set-public-url", "http://mdm.acme.example")
        assert code == 0 and "Warning" in err and "http://mdm.acme.example" in err, out + err
        code, out, err = cli("server", "set-public-url", "https://mdm.acme.example")
        assert code == 0 and "Warning" not in err, out + err
