"""The one settings object (pomona.settings): every POMONA_* variable, one-line errors, the serve hand-off,
and docs/configuration.md generated from the model."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pomona import logs
from pomona.cli import main as cli_main
from pomona.cli.main import _asks_for_json, main
from pomona.domain.errors import InvalidInputError
from pomona.domain.reasons import ReasonCode
from pomona.i18n import set_process_lang
from pomona.services.push import PushSettings
from pomona.settings import HANDOFF_ENV, Settings, env_names, lang_from_env, markdown

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "pomona"
KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def refused(environ: dict[str, str]) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        Settings.from_environ(environ)
    return info.value


class TestFromEnvironment:
    @pytest.mark.parametrize(
        ("variable", "value", "attribute", "expected"),
        [
            ("POMONA_DATA_DIR", "/srv/pomona", "data_dir", Path("/srv/pomona")),
            ("POMONA_DATABASE_URL", "postgresql://u@db/p", "database_url", "postgresql://u@db/p"),
            ("POMONA_PUBLIC_URL", "https://mdm.example.com", "public_url", "https://mdm.example.com"),
            (
                "POMONA_SIGNING_IDENTITY",
                "/etc/pomona/sign.pem",
                "signing_identity",
                Path("/etc/pomona/sign.pem"),
            ),
            ("POMONA_DNS_SERVER", "10.0.0.53:5353", "dns_server", "10.0.0.53:5353"),
            ("POMONA_ENROLLMENT_CNAME_TARGET", "e.example", "enrollment_cname_target", "e.example"),
            ("POMONA_REGISTRATION_CNAME_TARGET", "r.example", "registration_cname_target", "r.example"),
            ("POMONA_WELL_KNOWN_URL", "https://{domain}/wk", "well_known_url", "https://{domain}/wk"),
            ("POMONA_APNS_URL", "https://127.0.0.1:2197", "apns_url", "https://127.0.0.1:2197"),
            ("POMONA_APNS_CA", "/tmp/ca.pem", "apns_ca", Path("/tmp/ca.pem")),
            ("POMONA_PUSH_WORKER", "0", "push_worker", False),
            ("POMONA_HEALTH_INTERVAL", "0", "health_interval", 0.0),
            ("POMONA_DEVICE_THREADS", "0", "device_threads", 0),
            ("POMONA_LANG", "zh-CN", "lang", "zh-CN"),
            ("POMONA_LOG_FORMAT", "json", "log_format", "json"),
            ("POMONA_LOG_LEVEL", "debug", "log_level", "debug"),
            ("POMONA_ACCESS_LOG", "1", "access_log", True),
            ("POMONA_EVENT_RETENTION_DAYS", "90", "event_retention_days", 90),
            ("POMONA_COMMAND_RETENTION_DAYS", "7", "command_retention_days", 7),
            ("POMONA_COMMAND_RETENTION_DAYS", "0", "command_retention_days", 0),
        ],
    )
    def test_each_variable_sets_its_field(
        self, variable: str, value: str, attribute: str, expected: object
    ) -> None:
        """Each POMONA_* variable lands, typed, in its field."""
        assert getattr(Settings.from_environ({variable: value}), attribute) == expected

    @pytest.mark.parametrize(
        ("variable", "value", "attribute", "expected"),
        [
            ("POMONA_PUSH_REPUSH", "2, 4,8", "repush", (2.0, 4.0, 8.0)),
            ("POMONA_PUSH_REPUSH_CAP", "7200", "repush_cap", 7200.0),
            ("POMONA_PUSH_LEASE", "5", "lease", 5.0),
            ("POMONA_PUSH_RETRY_BASE", "0.5", "retry_base", 0.5),
            ("POMONA_PUSH_UNRESPONSIVE_AFTER", "600", "unresponsive_after", 600.0),
            ("POMONA_PUSH_POLL", "0.2", "poll", 0.2),
        ],
    )
    def test_push_variables_set_the_push_settings(
        self, variable: str, value: str, attribute: str, expected: object
    ) -> None:
        """POMONA_PUSH_* land in the nested push settings; the re-push schedule is comma-separated seconds."""
        settings = Settings.from_environ({variable: value})
        assert getattr(settings.push, attribute) == expected
        service = settings.push.to_push_settings()
        assert getattr(service, "poll_interval" if attribute == "poll" else attribute) == expected

    def test_push_defaults_are_the_push_services(self) -> None:
        """Unset, the push settings are exactly the push service's defaults."""
        assert Settings().push.to_push_settings() == PushSettings()
        assert Settings.from_environ({}).push.to_push_settings() == PushSettings()

    def test_secret_key_is_base64_of_32_bytes(self) -> None:
        """POMONA_SECRET_KEY is decoded to the 32-byte server key and never shown."""
        settings = Settings.from_environ({"POMONA_SECRET_KEY": KEY_B64})
        assert settings.server_key() == KEY
        assert KEY_B64 not in repr(settings) and KEY_B64 not in settings.model_dump_json()

    def test_language_falls_back_to_the_locale(self) -> None:
        """The language is POMONA_LANG, else LC_ALL, else LANG; any zh* locale is zh-CN, others en."""
        assert Settings.from_environ({"LANG": "zh_CN.UTF-8"}).lang == "zh-CN"
        assert Settings.from_environ({"LANG": "zh_CN.UTF-8", "LC_ALL": "de_DE"}).lang == "en"
        assert Settings.from_environ({"LANG": "zh_CN.UTF-8", "POMONA_LANG": "en"}).lang == "en"
        assert Settings.from_environ({}).lang is None
        assert lang_from_env({"LC_ALL": "zh_TW", "POMONA_PUSH_LEASE": "not a number"}) == "zh-CN"

    def test_empty_variables_count_as_unset(self) -> None:
        """An empty variable leaves the default."""
        settings = Settings.from_environ(
            {"POMONA_PUBLIC_URL": "", "POMONA_PUSH_LEASE": "", "POMONA_LANG": ""}
        )
        assert settings == Settings.from_environ({})

    def test_overrides_win_and_none_is_no_override(self) -> None:
        """Options passed to from_env win over the environment; None leaves the environment's value."""
        env = {"POMONA_PUBLIC_URL": "https://env.example", "POMONA_DATA_DIR": "/env"}
        settings = Settings.from_environ(env, {"public_url": "https://option.example", "data_dir": None})
        assert settings.public_url == "https://option.example"
        assert settings.data_dir == Path("/env")

    def test_from_env_reads_the_process_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """from_env is from_environ over os.environ."""
        monkeypatch.setenv("POMONA_PUBLIC_URL", "https://process.example")
        assert Settings.from_env().public_url == "https://process.example"


class TestBuiltInCode:
    def test_code_ignores_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Settings(...) in code is the defaults and its arguments: nothing leaks in from the shell."""
        monkeypatch.setenv("POMONA_PUBLIC_URL", "https://leak.example")
        monkeypatch.setenv("POMONA_PUSH_WORKER", "1")
        settings = Settings(data_dir=Path("/d"))
        assert settings.public_url == "http://127.0.0.1:8080" and settings.data_dir == Path("/d")
        assert settings.push_worker is False

    def test_server_sends_pushes_unless_told_not_to(self) -> None:
        """The environment's settings start a push worker unless POMONA_PUSH_WORKER=0."""
        assert Settings.from_environ({}).push_worker is True
        assert Settings.from_environ({"POMONA_PUSH_WORKER": "false"}).push_worker is False

    def test_url_is_sqlite_under_data_dir_by_default(self, tmp_path: Path) -> None:
        """Without a database URL the database is SQLite in the data directory."""
        assert Settings(data_dir=tmp_path).url().endswith(f"{tmp_path.resolve()}/pomona.db")
        assert Settings(data_dir=tmp_path, database_url="postgresql://x/y").url() == "postgresql://x/y"

    def test_re_export_from_the_composition_root(self) -> None:
        """`from pomona.app import Settings` is the same class."""
        from pomona.app import Settings as AppSettings

        assert AppSettings is Settings


class TestErrors:
    @pytest.mark.parametrize(
        ("environ", "variable"),
        [
            ({"POMONA_PUSH_LEASE": "soon"}, "POMONA_PUSH_LEASE"),
            ({"POMONA_PUSH_REPUSH": "60,-5"}, "POMONA_PUSH_REPUSH"),
            ({"POMONA_PUSH_REPUSH": "every minute"}, "POMONA_PUSH_REPUSH"),
            ({"POMONA_HEALTH_INTERVAL": "-1"}, "POMONA_HEALTH_INTERVAL"),
            ({"POMONA_DEVICE_THREADS": "-1"}, "POMONA_DEVICE_THREADS"),
            ({"POMONA_PUSH_WORKER": "maybe"}, "POMONA_PUSH_WORKER"),
            ({"POMONA_LOG_FORMAT": "xml"}, "POMONA_LOG_FORMAT"),
            ({"POMONA_LOG_LEVEL": "loud"}, "POMONA_LOG_LEVEL"),
            ({"POMONA_SECRET_KEY": "not base64!"}, "POMONA_SECRET_KEY"),
            ({"POMONA_SECRET_KEY": base64.b64encode(b"short").decode()}, "POMONA_SECRET_KEY"),
            ({"POMONA_EVENT_RETENTION_DAYS": "3"}, "POMONA_EVENT_RETENTION_DAYS"),
            ({"POMONA_EVENT_RETENTION_DAYS": "a year"}, "POMONA_EVENT_RETENTION_DAYS"),
            ({"POMONA_COMMAND_RETENTION_DAYS": "-1"}, "POMONA_COMMAND_RETENTION_DAYS"),
        ],
    )
    def test_a_bad_value_is_one_line_naming_the_variable(
        self, environ: dict[str, str], variable: str
    ) -> None:
        """A bad value is INVALID_INPUT with one line that names its variable."""
        exc = refused(environ)
        assert exc.reason is ReasonCode.INVALID_INPUT
        assert variable in exc.detail and "\n" not in exc.detail

    def test_several_bad_values_share_the_line(self) -> None:
        """Every bad variable is named, still on one line."""
        exc = refused({"POMONA_PUSH_LEASE": "x", "POMONA_LOG_LEVEL": "loud"})
        assert "POMONA_PUSH_LEASE" in exc.detail and "POMONA_LOG_LEVEL" in exc.detail
        assert "\n" not in exc.detail

    @pytest.mark.parametrize("value", ["{not json", "[1, 2]"])
    def test_a_push_object_that_is_not_json_is_one_line(self, value: str) -> None:
        """The push settings as one JSON object: anything else is one line naming the variable."""
        exc = refused({"POMONA_PUSH": value})
        assert exc.reason is ReasonCode.INVALID_INPUT
        assert "POMONA_PUSH:" in exc.detail and "\n" not in exc.detail

    def test_a_push_object_sets_the_push_settings_under_its_own_variables(self) -> None:
        """POMONA_PUSH (JSON) sets push fields; POMONA_PUSH_<FIELD> wins over it."""
        push = Settings.from_environ({"POMONA_PUSH": '{"lease": 5, "poll": 9}', "POMONA_PUSH_POLL": "3"}).push
        assert (push.lease, push.poll) == (5.0, 3.0)

    def test_a_bad_secret_is_not_echoed(self) -> None:
        """The error for a bad POMONA_SECRET_KEY does not repeat the value."""
        value = base64.b64encode(b"a secret of the wrong length").decode()
        assert value not in refused({"POMONA_SECRET_KEY": value}).detail


class TestHandoff:
    def test_workers_get_the_parents_settings(self) -> None:
        """The hand-off carries every setting, the secret key included, and is read instead of the rest."""
        parent = Settings.from_environ(
            {"POMONA_SECRET_KEY": KEY_B64, "POMONA_PUSH_REPUSH": "2,4", "POMONA_LANG": "zh-CN"},
            {"public_url": "https://mdm.example.com", "access_log": True},
        )
        environ: dict[str, str] = {"POMONA_PUBLIC_URL": "https://ignored.example"}
        parent.handoff(environ)
        child = Settings.from_environ(environ)
        assert child == parent and child.server_key() == KEY

    def test_a_broken_handoff_is_refused(self) -> None:
        """A hand-off that is not JSON is INVALID_INPUT."""
        assert refused({HANDOFF_ENV: "{not json"}).reason is ReasonCode.INVALID_INPUT


class TestEverySettingIsDocumented:
    def test_docs_are_generated_from_the_model(self) -> None:
        """docs/configuration.md is what `python -m pomona.settings --markdown` prints."""
        committed = (ROOT / "docs" / "configuration.md").read_text("utf-8")
        assert committed == markdown(), (
            "regenerate: python -m pomona.settings --markdown > docs/configuration.md"
        )

    def test_every_variable_in_the_source_is_a_setting(self) -> None:
        """Every POMONA_* name the source mentions is a setting (or the serve hand-off)."""
        known = {name for names in env_names().values() for name in names} | {HANDOFF_ENV}
        pattern = re.compile(r"\bPOMONA_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_<*])")
        found = {m for path in SRC.rglob("*.py") for m in pattern.findall(path.read_text("utf-8"))}
        assert found, "the scan found nothing: is the pattern right?"
        assert found <= known, f"not settings: {sorted(found - known)}"

    def test_every_setting_is_in_the_docs(self) -> None:
        """Each setting's variable appears in docs/configuration.md."""
        docs = markdown()
        missing = [names[0] for names in env_names().values() if f"`{names[0]}`" not in docs]
        assert not missing

    def test_only_settings_reads_the_environment(self) -> None:
        """The environment is read in pomona/settings.py alone (the serve hand-off writes it; the key pool
        looks up the user's cache directory)."""
        allowed = {"settings.py", "cli/main.py", "testing/keypool.py"}
        readers = {
            str(path.relative_to(SRC))
            for path in SRC.rglob("*.py")
            if re.search(r"os\.environ|getenv\(|envvar=", path.read_text("utf-8"))
        }
        assert readers <= allowed, f"reads the environment: {sorted(readers - allowed)}"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures logging for the process: put it back afterwards."""
    yield
    logs.reset()


@pytest.fixture
def chinese_cli() -> Iterator[None]:
    """The command line reads its language afresh from the environment (it reads it once a process)."""
    previous = set_process_lang(None)
    cli_main._process_lang.cache_clear()
    yield
    cli_main._process_lang.cache_clear()
    set_process_lang(previous)


class TestCommandLine:
    def test_a_bad_variable_stops_any_command_with_one_line(self, restore_logging: None) -> None:
        """Any command refuses to start on a bad variable: exit code 2, one line naming it."""
        result = CliRunner().invoke(main, ["tenant", "list"], env={"POMONA_PUSH_LEASE": "soon"})
        assert result.exit_code == 2
        assert "POMONA_PUSH_LEASE" in result.output and len(result.output.strip().splitlines()) == 1

    @pytest.mark.parametrize("flag", [["--json"], ["--format", "json"]])
    def test_a_bad_variable_is_json_when_the_command_asks_for_json(
        self, restore_logging: None, flag: list[str]
    ) -> None:
        """With --json, a settings error is the JSON object of every other error, on stdout, exit 2."""
        result = CliRunner().invoke(main, ["tenant", "list", *flag], env={"POMONA_PUSH_LEASE": "soon"})
        assert result.exit_code == 2, result.output
        body = json.loads(result.stdout)
        assert body["reason"] == "INVALID_INPUT" and "POMONA_PUSH_LEASE" in body["message"]

    def test_json_after_a_double_dash_is_not_the_option(self) -> None:
        """Only an option before ``--`` asks for JSON; ``--format json`` does, ``--format table`` not."""
        assert _asks_for_json(["list", "--json"]) and _asks_for_json(["x", "--format=json"])
        assert not _asks_for_json(["run", "--", "--json"]) and not _asks_for_json(["x", "--format", "table"])

    def test_a_bad_variable_is_told_in_the_command_lines_language(
        self, restore_logging: None, chinese_cli: None
    ) -> None:
        """A bad variable's line is in Simplified Chinese under a Chinese locale, the variable named."""
        env = {"LANG": "zh_CN.UTF-8", "POMONA_LANG": None, "LC_ALL": None, "POMONA_EVENT_RETENTION_DAYS": "3"}
        result = CliRunner().invoke(main, ["tenant", "list"], env=env)
        assert result.exit_code == 2
        assert "设置无效：POMONA_EVENT_RETENTION_DAYS：应为 0（永久保留）或不少于 7 天" in result.output

    def test_a_push_object_that_is_not_json_is_one_line_not_a_traceback(
        self, restore_logging: None, chinese_cli: None
    ) -> None:
        """POMONA_PUSH that is not JSON stops a command with one line, its language still read."""
        env = {"LANG": "zh_CN.UTF-8", "POMONA_LANG": None, "LC_ALL": None, "POMONA_PUSH": "{x"}
        result = CliRunner().invoke(main, ["tenant", "list"], env=env)
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [result.output.strip()]
        assert "POMONA_PUSH：不是 JSON" in result.output and "Traceback" not in result.output

    def test_data_dir_comes_from_the_environment_unless_given(
        self, tmp_path: Path, restore_logging: None
    ) -> None:
        """POMONA_DATA_DIR is where commands keep their database; --data-dir wins over it."""
        env = {"POMONA_DATA_DIR": str(tmp_path / "env"), "POMONA_DATABASE_URL": ""}
        assert CliRunner().invoke(main, ["tenant", "list", "--json"], env=env).exit_code == 0
        assert (tmp_path / "env" / "pomona.db").exists()
        option = ["tenant", "list", "--json", "--data-dir", str(tmp_path / "option")]
        assert CliRunner().invoke(main, option, env=env).exit_code == 0
        assert (tmp_path / "option" / "pomona.db").exists()

    def test_serve_hands_its_settings_to_the_server_processes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
    ) -> None:
        """`pomona serve` writes nothing to the environment but the hand-off, and uvicorn's factory builds
        the server from exactly those settings."""
        import uvicorn

        from pomona.asgi import create

        calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
        monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append((a, kw)))  # the process boundary
        monkeypatch.setenv(HANDOFF_ENV, "")  # restored after the test
        monkeypatch.delenv("POMONA_PUBLIC_URL", raising=False)
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        before = {k: v for k, v in os.environ.items() if k != HANDOFF_ENV}
        args = [
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            "18080",
            "--access-log",
            "--log-level",
            "warning",
        ]
        result = CliRunner().invoke(main, args, env={"POMONA_PUSH_REPUSH": "2,4"})
        assert result.exit_code == 0, result.output
        ((positional, keywords),) = calls
        assert positional == ("pomona.asgi:create",) and keywords["factory"] is True
        assert {k: v for k, v in os.environ.items() if k != HANDOFF_ENV} == before
        handed = Settings.from_env()
        assert handed.data_dir == tmp_path and handed.public_url == "http://127.0.0.1:18080"
        assert handed.access_log and handed.log_level == "warning" and handed.push_worker
        assert handed.push.repush == (2.0, 4.0)
        app = create()
        assert app.app.pomona.settings == handed  # type: ignore[attr-defined]
        app.app.pomona.close()  # type: ignore[attr-defined]
