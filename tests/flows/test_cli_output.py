"""The CLI's one output convention (docs/cli.md, issue 11 item 8): a table for people, --json for scripts
on every command, lists as JSON arrays; diagnose, health, incident and events fit 80 columns with
readable evidence; --fail-on for monitoring scripts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from diag_helpers import SERVER_HOST, World
from helpers import same_data_dir  # noqa: F401
from pomona.cli.events_cmds import follow_lines
from pomona.cli.main import main
from pomona.domain.models import Event, Outcome, Step
from pomona.testing.virtual_device import EnrollmentRefused

# Every command that lists or shows something, with the JSON it prints: a list is an array.
LISTS = {
    "tenant list": [],
    "user list": ["--tenant", "acme"],
    "device list": ["--tenant", "acme"],
    "group list": ["--tenant", "acme"],
    "restriction list": ["--tenant", "acme"],
    "corporate list": ["--tenant", "acme"],
    "token list": [],
    "enroll-token list": ["--tenant", "acme"],
    "apns reenroll": ["--tenant", "acme"],
    "events": ["--tenant", "acme"],
}
SHOWS = {
    "user show": ["--tenant", "acme", "ana@acme.example"],
    "apns status": ["--tenant", "acme"],
    "health": ["--tenant", "acme"],
    "report failures": ["--tenant", "acme"],
    "incident": ["--tenant", "acme", "--code", "PERSONAL_DEVICE_BLOCKED"],
    "diagnose": ["--tenant", "acme", "--user", "ana@acme.example"],
    "policy explain": ["--tenant", "acme", "--user", "ana@acme.example"],
    "server show": [],
    "licence show": ["--tenant", "acme"],
    "webhook show": ["--tenant", "acme"],
}
# Commands without the shared options: they start servers or drive devices and print their own summary.
OWN_OUTPUT = {"demo", "simulate", "emulate apns"}


def leaves(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command of the `pomona` group by its full name ("tenant list")."""
    out: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            out.update(leaves(cmd, full + " "))
        else:
            out[full] = cmd
    return out


def options(cmd: click.Command) -> dict[str, click.Option]:
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


@pytest.fixture
def env(w: World, db_url: str, monkeypatch: pytest.MonkeyPatch, zone: Any) -> World:
    """The CLI reads the world's database, DNS server and public URL, at 80 columns."""
    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    monkeypatch.setenv("POMONA_DNS_SERVER", f"127.0.0.1:{zone.port}")
    monkeypatch.setenv("POMONA_PUBLIC_URL", f"https://{SERVER_HOST}")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("POMONA_LANG", raising=False)
    return w


def run(*args: str) -> tuple[int, str, str]:
    """`pomona ARGS` in this process: (exit code, stdout, stderr)."""
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


def refused(w: World) -> None:
    """Ana's personal device is refused (PERSONAL_DEVICE_BLOCKED) after an admin change: evidence, a
    suspect change and a failure to report."""
    w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, personal="block")
    with pytest.raises(EnrollmentRefused):
        w.device(serial="SERIALREFUSED1").enroll()


def assert_fits(out: str, cols: int = 80) -> None:
    wide = [line for line in out.splitlines() if cell_len(line) > cols]
    assert not wide, "\n".join(wide)


def assert_no_raw(out: str) -> None:
    """No JSON object or Python dict text for people."""
    for raw in ("{'", '{"', "': ", "{}"):
        assert raw not in out, out


class TestConvention:
    def test_every_command_has_json_and_no_format(self) -> None:
        """Every command but demo, simulate and emulate has --json; none shows --format (a hidden one is
        the deprecated alias); every list and show command is among them."""
        commands = leaves(main)
        assert set(LISTS) | set(SHOWS) <= set(commands)
        for name, cmd in commands.items():
            opts = options(cmd)
            if "--format" in opts:
                assert opts["--format"].hidden and "Deprecated" in (opts["--format"].help or ""), name
            if name in OWN_OUTPUT:
                continue
            assert "--json" in opts, name
            assert opts["--json"].help == options(commands["tenant list"])["--json"].help, name

    def test_the_convention_is_documented(self) -> None:
        """docs/cli.md names every list command and documents --fail-on for health and diagnose."""
        doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text("utf-8")
        for name in LISTS:
            assert f"`{name}`" in doc, name
        for level in ("warning", "critical", "proven"):
            assert f"| `{level}` |" in doc, level
        assert "JSON Lines" in doc and "--format" in doc

    def test_lists_are_json_arrays_and_shows_objects(self, env: World) -> None:
        """--json output parses: a list command prints an array, a show command an object."""
        env.device().enroll()
        refused(env)
        for name, args in {**LISTS, **SHOWS}.items():
            code, out, err = run(*name.split(), *args, "--json")
            assert code == 0, (name, out, err)
            data = json.loads(out)
            assert isinstance(data, list if name in LISTS else dict), name
            if name in LISTS and name not in ("apns reenroll", "corporate list", "group list"):
                assert data, name

    def test_lists_are_tables_with_named_columns(self, env: World) -> None:
        """Without --json a list is a table whose header names the columns, id or name first."""
        code, out, _ = run("group", "list", "--tenant", "acme")
        assert code == 0 and "No groups" in out
        env.p.policy.create_group("acme", "staff")
        code, out, _ = run("group", "list", "--tenant", "acme")
        header = next(line for line in out.splitlines() if "Name" in line)
        assert header.index("ID") < header.index("Name") < header.index("Members") and "staff" in out
        code, out, _ = run("restriction", "list", "--tenant", "acme")
        assert code == 0 and "Settings" in out and "limit 15" in out
        assert_no_raw(out)

    def test_licence_and_webhook_show(self, env: World) -> None:
        """`licence show` counts the seats; `webhook show` says when there is no webhook and how to set one."""
        code, out, _ = run("licence", "show", "--tenant", "acme")
        assert code == 0 and "100 licence seat(s), 1 assigned, 99 free" in out
        assert json.loads(run("licence", "show", "--tenant", "acme", "--json")[1]) == {
            "seats": 100,
            "assigned": 1,
            "free": 99,
        }
        code, out, _ = run("webhook", "show", "--tenant", "acme")
        assert code == 0 and "pomona webhook set --tenant acme" in out

    def test_deprecated_format_warns(self, env: World) -> None:
        """`--format json` still prints JSON, with a deprecation warning on stderr."""
        code, out, err = run("health", "--tenant", "acme", "--format", "json")
        assert code == 0 and "findings" in json.loads(out)
        assert "--format is deprecated" in err and "--json" in err


class TestEightyColumns:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_diagnose_fits_and_reads(self, env: World, lang: str) -> None:
        """diagnose (with --explain) fits 80 columns, with evidence as readable lines, in both languages."""
        refused(env)
        env.zone.cnames.clear()
        for who in (["--user", "ana@acme.example"], ["--serial", "SERIALREFUSED1"], []):
            code, out, _ = run("diagnose", "--tenant", "acme", *who, "--lang", lang, "--explain")
            assert code == 0, out
            assert_fits(out)
            assert_no_raw(out)
        code, out, _ = run("diagnose", "--tenant", "acme", "--user", "ana@acme.example", "--lang", lang)
        assert "PERSONAL_DEVICE_BLOCKED" in out and "SERIALREFUSED1" in out  # the refusal, as evidence

    def test_observed_in_the_chosen_language(self, env: World) -> None:
        """What the server saw (and the reasoning) is written in the chosen language, not English."""
        refused(env)
        args = ["diagnose", "--tenant", "acme", "--user", "ana@acme.example", "--explain"]
        _, out, _ = run(*args, "--lang", "zh-CN")
        assert "服务器所见：服务器于" in out and "拒绝了本次尝试" in out
        for english in (
            "refused this attempt",
            "ruled out",
            "does not hold",
            "need the device",
            "the server",
        ):
            assert english not in out, english
        _, out, _ = run(*args, "--lang", "en")
        assert "What the server saw: the server refused this attempt at authenticate" in out.replace(
            "\n    ", " "
        )
        data = json.loads(run(*args, "--lang", "zh-CN", "--json")[1])
        assert all(not f["observed"].isascii() for f in data["findings"]), data["findings"]

    def test_diagnose_heading_names_whom(self, env: World) -> None:
        """The heading names the user, else the device, else says neither was given: never '?'."""
        refused(env)
        _, out, _ = run("diagnose", "--tenant", "acme")
        assert "Diagnosis for tenant acme (no user or device given)" in out and "?" not in out.splitlines()[0]
        _, out, _ = run("diagnose", "--tenant", "acme", "--lang", "zh-CN")
        assert out.splitlines()[0] == "租户 acme 的诊断（未指定用户或设备）"
        _, out, _ = run("diagnose", "--tenant", "acme", "--serial", "SERIALREFUSED1")
        assert out.splitlines()[0] == "Diagnosis for device SERIALREFUSED1 in tenant acme"

    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_health_shows_the_expected_cname_target(self, env: World, lang: str) -> None:
        """health's table names the expected CNAME target, fits 80 columns, without JSON."""
        env.zone.cnames.clear()
        code, out, _ = run("health", "--tenant", "acme", "--lang", lang)
        assert code == 0 and "DNS_ENROLLMENT_CNAME_MISSING" in out
        assert SERVER_HOST in out and ("expected target" in out if lang == "en" else "应指向" in out)
        assert_fits(out)
        assert_no_raw(out)

    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_incident_is_markdown_with_readable_details(self, env: World, lang: str) -> None:
        """incident prints Markdown whose suspect changes read `label: value`, no dict text, in 80 columns."""
        refused(env)
        code, out, _ = run(
            "incident", "--tenant", "acme", "--code", "PERSONAL_DEVICE_BLOCKED", "--lang", lang
        )
        assert code == 0 and out.startswith("# ") and "`restriction.edit`" in out
        assert "ios personal allowed" in out.replace("\n  ", " ")  # the change's detail, readable
        assert_fits(out)
        assert_no_raw(out)

    def test_events_follow_lines_fit(self) -> None:
        """An event of --follow's text output is two lines within 80 cells, however long its user, device
        and detail (CJK included); the reason code is kept whole."""
        e = Event(
            tenant_id="t",
            at=datetime(2026, 12, 4, 9, 0, tzinfo=UTC),
            step=Step.AUTHENTICATE,
            outcome=Outcome.FAILED,
            reason="DEVICE_ENROLLED_TO_OTHER_USER",
            upn="a-very-long-user-name-for-testing@a-very-long-domain.example",
            serial="SERIAL0123456789",
            detail={"error": "设备已注册到其他用户" * 5, "note": "x" * 100},
            id=1,
        )
        lines = follow_lines(e, 80)
        assert len(lines) == 2 and "DEVICE_ENROLLED_TO_OTHER_USER" in lines[0]
        assert all(cell_len(line) <= 80 for line in lines), lines
        assert lines[1].endswith("…")

    def test_lists_fit(self, env: World) -> None:
        """The list tables fit 80 columns."""
        refused(env)
        for name, args in LISTS.items():
            code, out, _ = run(*name.split(), *args)
            assert code == 0, (name, out)
            assert_fits(out)


class TestFailOn:
    def test_health(self, env: World) -> None:
        """health exits 1 with --fail-on at or below the worst open finding, else 0; default 0."""
        assert run("health", "--tenant", "acme", "--fail-on", "warning")[0] == 0  # all well
        env.zone.cnames.clear()  # a warning
        assert run("health", "--tenant", "acme")[0] == 0
        assert run("health", "--tenant", "acme", "--fail-on", "warning")[0] == 1
        assert run("health", "--tenant", "acme", "--fail-on", "critical")[0] == 0
        assert run("health", "--tenant", "acme", "--fail-on", "proven", "--json")[0] == 0
        env.p.admin.create_tenant("beta", "beta.example")  # no push certificate: critical
        assert run("health", "--tenant", "beta", "--fail-on", "critical")[0] == 1
        assert run("health", "--tenant", "beta", "--fail-on", "proven")[0] == 1

    def test_diagnose(self, env: World) -> None:
        """diagnose exits 1 when --fail-on's level is met (proven: the answer is proven; critical: a cause
        found; warning: that or a tenant fault also wrong), else 0; default 0."""
        clean = ["diagnose", "--tenant", "acme"]
        assert run(*clean, "--fail-on", "critical")[0] == 0  # nothing found: UNKNOWN
        assert run(*clean, "--fail-on", "warning")[0] == 0
        env.zone.cnames.clear()  # a tenant fault, listed as also wrong
        assert run(*clean, "--fail-on", "critical")[0] == 0
        assert run(*clean, "--fail-on", "warning", "--json")[0] == 1
        env.dns_ok()
        d = env.device()
        d.enroll()
        assert run(*clean, "--serial", d.serial, "--fail-on", "proven")[0] == 0
        refused(env)
        bad = ["diagnose", "--tenant", "acme", "--serial", "SERIALREFUSED1"]
        assert run(*bad)[0] == 0
        assert run(*bad, "--fail-on", "proven")[0] == 1
        assert run(*bad, "--fail-on", "critical", "--json")[0] == 1
