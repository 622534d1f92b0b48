"""The everyday commands of issue 11 (item 10): `user list|show|set` and `events`, through the real CLI
against a real database (SQLite and PostgreSQL), with the devices and the portal they act on."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, cli, same_data_dir, setup_tenant  # noqa: F401 - same_data_dir is autouse here
from pomona import knowledge
from pomona.app import Pomona, create_app
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

ANA = "ana@acme.example"
BO = "bo@acme.example"


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def enroll(pomona: Pomona, client: TestClient, upn: str, serial: str) -> VirtualDevice:
    url = pomona.enrollment.urls.enroll(pomona.admin.create_enrollment_token("acme", upn).secret)
    d = VirtualDevice(url, client=client, serial=serial)  # type: ignore[arg-type]
    d.enroll()
    return d


class TestUserList:
    def test_table_and_json(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`user list` shows every user with enabled, licensed, group and device counts; --json the same."""
        pomona.admin.create_user("acme", BO, enabled=False)
        pomona.policy.create_group("acme", "staff")
        pomona.policy.add_member("acme", "staff", ANA)
        enroll(pomona, client, ANA, "SERIALANA01")
        code, out = cli(monkeypatch, db_url, "user", "list", "--tenant", "acme", "--json")
        assert code == 0, out
        rows = {r["upn"]: r for r in json.loads(out)}
        assert set(rows) == {ANA, BO}
        assert (rows[ANA]["enabled"], rows[ANA]["licensed"], rows[ANA]["groups"], rows[ANA]["devices"]) == (
            True,
            True,
            1,
            1,
        )
        assert (rows[BO]["enabled"], rows[BO]["licensed"], rows[BO]["groups"], rows[BO]["devices"]) == (
            False,
            False,
            0,
            0,
        )
        code, out = cli(monkeypatch, db_url, "user", "list", "--tenant", "acme")
        assert code == 0 and ANA in out and BO in out and "UPN" in out

    def test_empty_and_unknown_tenant(
        self, pomona: Pomona, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A tenant without users says so (exit 0); an unknown tenant is NOT_FOUND with exit 2."""
        pomona.admin.create_tenant("empty", "empty.example")
        code, out = cli(monkeypatch, db_url, "user", "list", "--tenant", "empty")
        assert code == 0 and "pomona user create" in out
        code, out = cli(monkeypatch, db_url, "user", "list", "--tenant", "nope", "--json")
        assert (code, json.loads(out)["reason"]) == (2, "NOT_FOUND")


class TestUserShow:
    def test_details(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`user show` gives licence, groups, MFA, DEM and the devices enrolled now, in text and JSON."""
        pomona.policy.create_group("acme", "staff")
        pomona.policy.add_member("acme", "staff", ANA)
        pomona.policy.set_user_flags("acme", ANA, is_dem=True, mfa_required=True)
        enroll(pomona, client, ANA, "SERIALANA01")
        code, out = cli(monkeypatch, db_url, "user", "show", "--tenant", "acme", ANA.upper(), "--json")
        assert code == 0, out
        d = json.loads(out)
        assert (d["upn"], d["licensed"], d["dem"], d["mfa_required"], d["groups"]) == (
            ANA,
            True,
            True,
            True,
            ["staff"],
        )
        assert [e["device"]["serial"] for e in d["enrollments"]] == ["SERIALANA01"]
        assert d["password_set"] is False and "password_hash" not in out
        code, out = cli(monkeypatch, db_url, "user", "show", "--tenant", "acme", ANA)
        assert code == 0 and "SERIALANA01" in out and "staff" in out

    def test_unknown_user(self, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown user is NOT_FOUND with exit 2, and one line, no traceback."""
        code, out = cli(monkeypatch, db_url, "user", "show", "--tenant", "acme", "nobody@acme.example")
        assert code == 2 and "NOT_FOUND" in out and "Traceback" not in out

    def test_chinese(self, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """With POMONA_LANG=zh-CN the details are in Chinese."""
        monkeypatch.setenv("POMONA_LANG", "zh-CN")
        from pomona.i18n import set_process_lang

        set_process_lang("zh-CN")
        try:
            code, out = cli(monkeypatch, db_url, "user", "show", "--tenant", "acme", ANA)
        finally:
            set_process_lang("en")
        assert code == 0 and "已分配许可证" in out


class TestUserSet:
    def test_password_prompted_twice(
        self, pomona: Pomona, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`user set --password` asks twice (hidden) and the new password signs in to the portal."""
        code, out = cli(
            monkeypatch,
            db_url,
            "user",
            "set",
            "--tenant",
            "acme",
            ANA,
            "--password",
            stdin="new-pass-123\nnew-pass-123\n",
        )
        assert code == 0, out
        assert "new-pass-123" not in out
        tenant = pomona.portal.tenant("acme")
        assert pomona.portal.sign_in_password(tenant, ANA, "new-pass-123", "10.0.0.1").user is not None

    def test_password_stdin_and_too_short(
        self, pomona: Pomona, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--password-stdin reads one line; a short password is INVALID_INPUT (exit 2) and changes nothing."""
        code, out = cli(
            monkeypatch, db_url, "user", "set", "--tenant", "acme", ANA, "--password-stdin", stdin="short\n"
        )
        assert code == 2 and "INVALID_INPUT" in out
        code, out = cli(
            monkeypatch,
            db_url,
            "user",
            "set",
            "--tenant",
            "acme",
            ANA,
            "--password-stdin",
            "--json",
            stdin="another-pass-9\n",
        )
        assert code == 0 and json.loads(out)["password_changed"] is True
        tenant = pomona.portal.tenant("acme")
        assert pomona.portal.sign_in_password(tenant, ANA, "another-pass-9", "10.0.0.1").user is not None

    def test_password_change_signs_out(
        self, pomona: Pomona, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A password reset from the CLI ends the sessions opened with the old password."""
        tenant = pomona.portal.tenant("acme")
        user = next(u for u in pomona.admin.list_users("acme") if u.upn == ANA)
        sid = pomona.portal.open_session(tenant, user.id)
        code, out = cli(
            monkeypatch,
            db_url,
            "user",
            "set",
            "--tenant",
            "acme",
            ANA,
            "--password-stdin",
            stdin="pass-word-77\n",
        )
        assert code == 0, out
        assert pomona.portal.session_user(tenant, sid) is None

    def test_disable_ends_portal_sessions(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Disabling ends the user's portal sessions at once: enabled again before their next use, they stay ended."""
        tenant = pomona.portal.tenant("acme")
        user = next(u for u in pomona.admin.list_users("acme") if u.upn == ANA)
        sid = pomona.portal.open_session(tenant, user.id)
        assert pomona.portal.session_user(tenant, sid) == user.id
        code, out = cli(monkeypatch, db_url, "user", "set", "--tenant", "acme", "--upn", ANA, "--disabled")
        assert code == 0, out
        code, out = cli(monkeypatch, db_url, "user", "set", "--tenant", "acme", "--upn", ANA, "--enabled")
        assert code == 0, out
        assert pomona.portal.session_user(tenant, sid) is None

    def test_disabled_user_is_refused_and_enabled_again(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`user set UPN --disable` refuses the user's enrollment (USER_DISABLED) and its session; --enable undoes it."""
        tenant = pomona.portal.tenant("acme")
        user = next(u for u in pomona.admin.list_users("acme") if u.upn == ANA)
        sid = pomona.portal.open_session(tenant, user.id)
        code, out = cli(monkeypatch, db_url, "user", "set", "--tenant", "acme", ANA, "--disable", "--json")
        assert (code, json.loads(out)["enabled"]) == (0, False), out
        # the session still names the user, so every page refuses them with USER_DISABLED
        assert pomona.portal.session_user(tenant, sid) == user.id
        with pytest.raises(EnrollmentRefused) as err:
            VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        assert err.value.reason == "USER_DISABLED"
        code, out = cli(monkeypatch, db_url, "user", "set", "--tenant", "acme", ANA, "--enable")
        assert code == 0, out
        VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]
        assert pomona.portal.session_user(tenant, sid) is None  # the old session stays ended

    @pytest.mark.parametrize(
        "args",
        [
            [ANA],  # nothing to change
            [],  # no user
            [ANA, "--upn", BO, "--enable"],  # two users
            [ANA, "--password", "--password-stdin"],
            ["nobody@acme.example", "--enable"],
        ],
    )
    def test_bad_input(
        self, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch, args: list[str]
    ) -> None:
        """Each mistake is one line with a reason code and exit 2."""
        code, out = cli(monkeypatch, db_url, "user", "set", "--tenant", "acme", *args, stdin="")
        assert code == 2 and re.search(r"\[(INVALID_INPUT|NOT_FOUND)\]", out) and "Traceback" not in out, out


class TestEvents:
    def _refusals(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A disabled user's refused enrollment, and an enrolled device of another user."""
        pomona.admin.create_user("acme", BO)
        pomona.policy.licence("acme", BO, assign=True)
        enroll(pomona, client, BO, "SERIALBO0001")
        pomona.policy.set_user_flags("acme", ANA, enabled=False)
        with pytest.raises(EnrollmentRefused):
            VirtualDevice(acme.enroll_url, client=client).enroll()  # type: ignore[arg-type]

    def test_filters_and_json_array(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """--json prints a JSON array, oldest first; --user, --serial and --code select."""
        self._refusals(pomona, client, acme)
        code, out = cli(monkeypatch, db_url, "events", "--tenant", "acme", "--json")
        assert code == 0, out
        lines = json.loads(out)
        assert len(lines) > 5 and [x["id"] for x in lines] == sorted(x["id"] for x in lines)
        code, out = cli(
            monkeypatch, db_url, "events", "--tenant", "acme", "--code", "user_disabled", "--json"
        )
        found = json.loads(out)
        assert code == 0 and found and {(x["reason"], x["upn"]) for x in found} == {("USER_DISABLED", ANA)}
        code, out = cli(monkeypatch, db_url, "events", "--tenant", "acme", "--user", ANA.upper(), "--json")
        found = json.loads(out)
        assert code == 0 and {x["upn"] for x in found} == {ANA}
        assert "user.update" in [x["detail"].get("action") for x in found]  # the disabling names her
        code, out = cli(
            monkeypatch, db_url, "events", "--tenant", "acme", "--serial", "SERIALBO0001", "--json"
        )
        found = json.loads(out)
        # The device's whole story: the events naming its serial, and those naming only its UDID
        # (TokenUpdate, commands), which are the same device's.
        assert code == 0 and found and {x["serial"] for x in found} <= {"SERIALBO0001", None}
        udids = {x["udid"] for x in found if x["serial"] == "SERIALBO0001"} - {None}
        assert all(x["udid"] in udids for x in found if x["serial"] is None), found
        code, out = cli(monkeypatch, db_url, "events", "--tenant", "acme", "--limit", "2", "--json")
        assert code == 0 and len(json.loads(out)) == 2

    def test_table_and_time_window(
        self,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The table names the code, user and device; --since in the future finds nothing, and says so."""
        self._refusals(pomona, client, acme)
        code, out = cli(monkeypatch, db_url, "events", "--tenant", "acme", "--code", "USER_DISABLED")
        assert code == 0 and "USER_DISABLED" in out and "Code" in out
        code, out = cli(
            monkeypatch, db_url, "events", "--tenant", "acme", "--since", "2199-01-01T00:00", "--json"
        )
        assert (code, json.loads(out)) == (0, [])
        code, out = cli(monkeypatch, db_url, "events", "--tenant", "acme", "--since", "2199-01-01T00:00")
        assert code == 0 and "No events" in out
        code, out = cli(
            monkeypatch, db_url, "events", "--tenant", "acme", "--until", "2000-01-01T00:00+08:00", "--json"
        )
        assert (code, json.loads(out)) == (0, [])

    @pytest.mark.parametrize(
        "args",
        [
            ["--tenant", "acme", "--since", "yesterday"],
            ["--tenant", "acme", "--follow", "--until", "2026-01-01"],
            ["--tenant", "acme", "--limit", "0"],
            ["--tenant", "nope"],
        ],
    )
    def test_bad_input(
        self, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch, args: list[str]
    ) -> None:
        """A bad time, --until with --follow, a bad limit or an unknown tenant: one line, exit 2."""
        code, out = cli(monkeypatch, db_url, "events", *args)
        assert code == 2 and re.search(r"\[(INVALID_INPUT|NOT_FOUND)\]", out) and "Traceback" not in out, out

    def test_follow_streams_new_events(
        self, pomona: Pomona, acme: TenantSetup, db_url: str, tmp_path: Path
    ) -> None:
        """`events --follow --json` prints new events as they come, one JSON line each, and Ctrl-C exits 0."""
        env = {
            **os.environ,
            "POMONA_DATABASE_URL": db_url,
            "POMONA_DATA_DIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join(sys.path),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pomona.cli.main",
                "events",
                "--tenant",
                "acme",
                "--user",
                BO,
                "--follow",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None and proc.stderr is not None
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]

        def next_line() -> dict[str, object]:
            return json.loads(lines.get(timeout=20))  # type: ignore[no-any-return]

        try:
            time.sleep(2)  # the command is up and following (no event of Bo yet)
            pomona.admin.create_user("acme", BO)
            first = next_line()
            assert (first["upn"], first["detail"]) == (BO, {"action": "user.create"})
            pomona.admin.create_user("acme", "cy@acme.example")  # another user's: not shown
            pomona.policy.set_user_flags("acme", BO, enabled=False)
            second = next_line()
            assert second["upn"] == BO and second["detail"] == {"action": "user.update", "enabled": False}
            assert int(second["id"]) > int(first["id"])  # type: ignore[call-overload]
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert lines.empty()


class TestKnowledgeNamesTheCommand:
    def test_no_text_sends_the_admin_to_the_raw_api(self) -> None:
        """No diagnosis text tells the admin to call GET …/events: they name `pomona events` instead."""
        for lang in ("en", "zh-CN"):
            raw = (Path(knowledge.__file__).parent / f"{lang}.yaml").read_text()
            assert "/events" not in raw and "pomona events --tenant {tenant}" in raw, lang

    def test_the_named_commands_run(
        self, pomona: Pomona, acme: TenantSetup, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every `pomona events ...` command in the knowledge base, filled for acme, runs with exit 0."""
        raw = "\n".join(
            (Path(knowledge.__file__).parent / f"{lang}.yaml").read_text() for lang in ("en", "zh-CN")
        )
        commands = set(re.findall(r"`(pomona events [^`]+)`", raw))
        assert len(commands) >= 6
        facts = {"tenant": "acme", "upn": ANA, "serial": "SERIAL1", "udid": "UDID-1"}
        for command in commands:
            args = command.format(**facts).split()[1:]
            code, out = cli(monkeypatch, db_url, *args, "--json")
            assert code == 0, (command, out)
