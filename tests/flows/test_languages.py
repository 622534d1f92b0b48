"""Both languages everywhere a person reads (issue 11, item 11): the built-in restrictions' names and the
policy verdict in the reader's language, and a refused CLI command in Chinese says its cause in Chinese,
not an English sentence after a Chinese prefix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from helpers import setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.cli.main import main
from pomona.i18n import set_process_lang

CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")
# What may stay Latin in a Chinese line: codes, names, commands, URLs, paths, option names.
NOT_PROSE = re.compile(r"\{[^{}]*\}|`[^`]*`|https?://\S+|--[\w-]+|\S*[/@]\S*|\[[A-Z_]+\]")
ENGLISH_PHRASE = re.compile(r"\b[A-Za-z][a-z]+\s+[a-z]{2,}\b")


def english_prose(text: str) -> str | None:
    m = ENGLISH_PHRASE.search(NOT_PROSE.sub(" ", text))
    return m.group(0) if m else None


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[str]:
    """The CLI on the test's database; a tenant `acme` (licensed ana, unlicensed bo)."""
    monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url="https://mdm.acme.example"))
    try:
        setup_tenant(p)
        p.admin.create_user("acme", "bo@acme.example")
    finally:
        p.close()
    yield db_url


@pytest.fixture
def chinese() -> Iterator[None]:
    """The command line's language is Chinese (as POMONA_LANG=zh-CN sets it when the CLI starts)."""
    previous = set_process_lang("zh-CN")
    try:
        yield
    finally:
        set_process_lang(previous)


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


class TestBuiltInNames:
    def test_explain_in_chinese(self, env: str) -> None:
        """`policy explain --lang zh-CN` names the built-in Default restrictions and the verdict in Chinese."""
        code, out, _ = cli(
            "policy", "explain", "--tenant", "acme", "--user", "bo@acme.example", "--lang", "zh-CN"
        )
        assert code == 0, out
        assert "默认设备类型限制" in out and "默认设备数量限制" in out, out
        assert "USER_NOT_LICENSED" in out and "该用户没有许可证" in out, out
        for line in out.splitlines():
            assert english_prose(line) is None, line

    def test_explain_names_the_blocking_default_in_chinese(self, env: str) -> None:
        """A refusal by the Default restriction names it in the reader's language, in English as stored."""
        code, out, _ = cli(
            "restriction", "edit", "--tenant", "acme", "--type", "platform", "--default", "--ipados", "block"
        )
        assert code == 0, out
        args = ("policy", "explain", "--tenant", "acme", "--user", "ana@acme.example", "--platform", "iPad")
        _, zh, _ = cli(*args, "--lang", "zh-CN")
        assert "iPadOS 被“默认设备类型限制”阻止" in zh, zh
        _, en, _ = cli(*args, "--lang", "en")
        assert "REFUSED with PLATFORM_BLOCKED: iPadOS is blocked by Default platform restriction" in en, en

    def test_explain_json_keeps_the_stored_name(self, env: str) -> None:
        """--json keeps the stable name for scripts and adds the name and the verdict for people."""
        code, out, _ = cli(
            "policy", "explain", "--tenant", "acme", "--user", "bo@acme.example", "--lang", "zh-CN", "--json"
        )
        data = json.loads(out)
        assert data["limit_restriction"]["name"] == "Default limit restriction"
        assert data["limit_restriction"]["display_name"] == "默认设备数量限制"
        assert data["message"] == "the user has no licence" and data["text"] == "该用户没有许可证"

    def test_restriction_edit_and_create(self, env: str, chinese: None) -> None:
        """Editing the Default, or creating a restriction without a name, names it in Chinese."""
        code, out, _ = cli(
            "restriction", "edit", "--tenant", "acme", "--type", "limit", "--default", "--limit", "3"
        )
        assert code == 0 and "默认设备数量限制" in out, out
        assert cli("group", "create", "--tenant", "acme", "staff")[0] == 0
        code, out, err = cli(
            "restriction",
            "create",
            "--tenant",
            "acme",
            "--type",
            "limit",
            "--priority",
            "2",
            "--group",
            "staff",
        )
        assert code == 0 and "设备数量限制 2" in out, (out, err)

    def test_restriction_list(self, env: str, chinese: None) -> None:
        """`restriction list` shows each built-in restriction's name in the command line's language."""
        code, out, _ = cli("restriction", "list", "--tenant", "acme", "--json")
        assert code == 0, out
        names = {r["name"]: r["display_name"] for r in json.loads(out)}
        assert names == {
            "Default platform restriction": "默认设备类型限制",
            "Default limit restriction": "默认设备数量限制",
        }


# Real failing commands: a wrong tenant, a bad duration, an unknown user, a bad URL, bad settings.
FAILING = [
    ("user", "list", "--tenant", "nope"),
    ("enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example", "--expires", "5x"),
    ("licence", "assign", "--tenant", "acme", "--user", "nobody@acme.example"),
    ("server", "set-public-url", "mdm.acme.example"),
    ("enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example", "--public-url", "ftp://x"),
    ("policy", "explain", "--tenant", "acme", "--user", "ana@acme.example", "--os", "seventeen"),
    ("policy", "explain", "--tenant", "acme", "--user", "ana@acme.example", "--platform", "android"),
    ("restriction", "create", "--tenant", "acme", "--type", "limit", "--priority", "1", "--group", "nogroup"),
    ("restriction", "delete", "--tenant", "acme", "--type", "limit", "--priority", "7"),
    ("user", "create", "--tenant", "acme", "--upn", "ana@acme.example"),
    ("licence", "set", "--tenant", "acme", "--seats", "-1"),
    ("token", "create", "--tenant", "acme", "--server"),
    ("webhook", "test", "--tenant", "acme"),
    ("serve", "--tls-key", "key.pem"),
]


class TestChineseErrors:
    @pytest.mark.parametrize("args", FAILING, ids=[" ".join(a[:2]) + f" {i}" for i, a in enumerate(FAILING)])
    def test_no_english_after_the_chinese_prefix(
        self, env: str, chinese: None, args: tuple[str, ...]
    ) -> None:
        """A refused command prints one Chinese line: its code, and its cause in Chinese (names and codes
        as they are), never an English sentence."""
        code, _, err = cli(*args)
        assert code == 2, err
        line = err.strip()
        assert line.startswith("错误 ["), line
        cause = line.split("：", 1)[1]
        assert CJK.search(cause) and english_prose(cause) is None, line

    @pytest.mark.parametrize(
        ("content", "key"),
        [
            (b"not a certificate", None),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "k"),
        ],
    )
    def test_a_bad_push_certificate(
        self, env: str, chinese: None, tmp_path: Path, content: bytes, key: str | None
    ) -> None:
        """`apns upload` with an unusable certificate or key says why in Chinese."""
        cert = tmp_path / "push.pem"
        cert.write_bytes(content)
        args = ["apns", "upload", "--tenant", "acme", "--cert", str(cert)]
        if key:
            (tmp_path / "push.key").write_text("not a key")
            args += ["--key", str(tmp_path / "push.key")]
        code, _, err = cli(*args)
        assert code == 2 and err.startswith("错误 [APNS_CERT_INVALID]："), err
        cause = err.strip().split("：", 1)[1]
        assert CJK.search(cause) and english_prose(cause) is None, err

    def test_a_commands_lang_option_sets_its_error_language(self, env: str) -> None:
        """`policy explain --lang zh-CN` refuses in Chinese even when the command line's language is English."""
        code, _, err = cli(
            "policy", "explain", "--tenant", "nope", "--user", "ana@acme.example", "--lang", "zh-CN"
        )
        assert code == 2 and err.strip() == "错误 [NOT_FOUND]：没有租户“nope”", err
        _, _, err = cli("user", "list", "--tenant", "nope")
        assert err.startswith("Error [NOT_FOUND]"), err  # and the language is English again afterwards

    def test_the_same_errors_in_english(self, env: str) -> None:
        """In English the same refusals read as before (the catalogue's English is the old text)."""
        _, _, err = cli("user", "list", "--tenant", "nope")
        assert "Error [NOT_FOUND]: no tenant 'nope'" in err, err
        _, _, err = cli("licence", "assign", "--tenant", "acme", "--user", "nobody@acme.example")
        assert "no user nobody@acme.example in tenant acme" in err, err

    def test_json_errors_follow_the_language(self, env: str, chinese: None) -> None:
        """--json carries the same Chinese message with its reason code."""
        code, out, _ = cli("user", "list", "--tenant", "nope", "--json")
        assert code == 2 and json.loads(out) == {"reason": "NOT_FOUND", "message": "没有租户“nope”"}

    def test_pomona_lang_sets_the_language(self, env: str, tmp_path: Path) -> None:
        """POMONA_LANG=zh-CN in the environment of a real `pomona` process gives the Chinese line."""
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pomona",
                "enroll-token",
                "create",
                "--tenant",
                "acme",
                "--user",
                "ana@acme.example",
                "--expires",
                "5x",
            ],
            env={**os.environ, "POMONA_LANG": "zh-CN"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert (
            proc.stderr.strip()
            == "错误 [INVALID_INPUT]：不是有效的时长：“5x”（请使用 90s、15m、1h、7d 这样的格式）"
        )


class TestAdminApi:
    @pytest.fixture
    def api(self, pomona: Pomona) -> Iterator[tuple[TestClient, str]]:
        """The admin API in process, with a tenant `acme` and its admin token."""
        s = setup_tenant(pomona)
        with TestClient(create_app(pomona=pomona, eager=False), base_url="https://mdm.acme.example") as c:  # type: ignore[arg-type]
            yield c, s.admin_token

    def test_errors_follow_accept_language(self, api: tuple[TestClient, str]) -> None:
        """A refusal's message is in the language the request asks for; English by default."""
        c, token = api
        auth = {"authorization": f"Bearer {token}"}
        path = "/api/v1/tenants/nope/restrictions"
        en = c.get(path, headers=auth)
        zh = c.get(path, headers={**auth, "accept-language": "zh-CN,zh;q=0.9"})
        assert en.status_code == zh.status_code == 404
        assert en.json()["message"] == "no tenant 'nope'"
        assert zh.json()["message"] == "没有租户“nope”"
        assert zh.json()["reason"] == en.json()["reason"] == "NOT_FOUND"

    def test_restrictions_show_their_names_for_people(self, api: tuple[TestClient, str]) -> None:
        """The API keeps each restriction's stored name and adds its display name in the reader's language."""
        c, token = api
        auth = {"authorization": f"Bearer {token}", "accept-language": "zh-CN"}
        rows = c.get("/api/v1/tenants/acme/restrictions", headers=auth).json()["restrictions"]
        assert {r["name"]: r["display_name"] for r in rows} == {
            "Default platform restriction": "默认设备类型限制",
            "Default limit restriction": "默认设备数量限制",
        }

    def test_the_link_page_names_the_default_in_chinese(
        self, pomona: Pomona, api: tuple[TestClient, str]
    ) -> None:
        """A phone's browser refused by the Default restriction reads its name in its own language."""
        c, _ = api
        pomona.policy.edit_restriction("acme", type_="platform", default=True, ios="block")
        url = pomona.enrollment.urls.enroll(
            pomona.admin.create_enrollment_token("acme", "ana@acme.example").secret
        )
        iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
        pages = {
            lang: c.get(
                url, headers={"Accept": "text/html", "Accept-Language": lang, "User-Agent": iphone}
            ).text
            for lang in ("zh-CN", "en")
        }
        assert "PLATFORM_BLOCKED" in pages["zh-CN"]
        assert "默认设备类型限制" in pages["zh-CN"] and "Default platform restriction" not in pages["zh-CN"]
        assert "Default platform restriction" in pages["en"]
