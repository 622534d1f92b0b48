"""The CLI starts without the server (issue 14): what a real `pomona` process imports, read from its
sys.modules at exit. Not timed (bench/cli_start.py prints the figures)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

if TYPE_CHECKING:
    from pomona.settings import Settings

#: Never imported by `import pomona.cli.main` nor by `pomona tenant list` on a migrated database.
SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "prometheus_client", "jinja2", "alembic")

#: Not needed to read the database and print a table: `pomona tenant list` on a migrated database imports
#: none of them (logging's structlog is imported when a line is written; the tenants are read on the
#: stdlib driver, pomona.fastread, so neither SQLAlchemy nor the composition root, the ports or the
#: services are imported; the push service is the server's).
NOT_FOR_A_READ = (
    "structlog",
    "rich",
    "pydantic_settings",
    "sqlalchemy",
    "asyncio",
    "pomona.app",
    "pomona.ports",
    "pomona.services.admin",
    "pomona.storage.database",
    "pomona.storage.schema",
    "pomona.services.push",
    "pomona.storage.push_sql",
    "pomona.storage.console_sql",
)

#: Runs `pomona ARGS` in this process, then writes the top-level names of sys.modules to the file
#: POMONA_TEST_MODULES names (atexit: after click's sys.exit).
RUNNER = """
import atexit, json, os, runpy, sys

def dump():
    with open(os.environ["POMONA_TEST_MODULES"], "w") as f:
        json.dump(sorted(sys.modules), f)

atexit.register(dump)
sys.argv = ["pomona", *sys.argv[1:]]
runpy.run_module("pomona", run_name="__main__")
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env["POMONA_TEST_MODULES"] = str(tmp_path / "modules.json")
    return env


def imported(tmp_path: Path, *args: str) -> set[str]:
    """The modules a real `pomona ARGS` process had imported when it exited (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads((tmp_path / "modules.json").read_text()))


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_the_cli_loads_no_server_module(tmp_path: Path) -> None:
    """`import pomona.cli.main` imports none of the server's libraries nor the command modules."""
    code = "import json, sys, pomona.cli.main; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout))
    assert not tops(modules) & set(SERVER_ONLY), sorted(tops(modules) & set(SERVER_ONLY))
    assert "pomona.cli.diagnose_cmds" not in modules and "pomona.app" not in modules


def test_tenant_list_on_a_migrated_database_loads_no_server_module(tmp_path: Path) -> None:
    """`pomona tenant list` on a migrated SQLite database imports no server library, not even Alembic."""
    data = tmp_path / "data"
    first = imported(tmp_path, "tenant", "list", "--data-dir", str(data))
    assert "alembic" in tops(first)  # a new database is migrated, by Alembic
    modules = imported(tmp_path, "tenant", "list", "--data-dir", str(data))
    assert not tops(modules) & set(SERVER_ONLY), sorted(tops(modules) & set(SERVER_ONLY))
    for lazy in ("pomona.services.diagnose", "pomona.http", "pomona.cli.diagnose_cmds", "pomona.net.dns"):
        assert lazy not in modules, lazy
    assert not modules & set(NOT_FOR_A_READ), sorted(modules & set(NOT_FOR_A_READ))


def test_a_command_that_logs_still_writes_through_structlog(tmp_path: Path) -> None:
    """The CLI's logging is set up lazily, yet a line written (here at debug) is structlog's JSON."""
    env = {**_env(tmp_path), "POMONA_LOG_LEVEL": "debug", "POMONA_LOG_FORMAT": "json"}
    args = ["tenant", "list", "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert lines and all({"event", "level", "logger", "timestamp"} <= set(x) for x in lines)
    assert "structlog" in tops(set(json.loads((tmp_path / "modules.json").read_text())))


def test_version_loads_no_command_module(tmp_path: Path) -> None:
    """`pomona --version` imports neither the composition root nor any command module."""
    modules = imported(tmp_path, "--version")
    assert not {m for m in modules if m.startswith("pomona.cli.") and m != "pomona.cli.main"}
    assert "pomona.app" not in modules and not tops(modules) & set(SERVER_ONLY)
    assert "importlib.metadata" not in modules  # the version is the package's own (__version__)


def test_the_version_printed_is_the_installed_packages(tmp_path: Path) -> None:
    """`pomona --version` prints pomona.__version__, which is the installed package's and pyproject's."""
    import importlib.metadata
    import tomllib

    import pomona

    proc = subprocess.run(
        [sys.executable, "-m", "pomona", "--version"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"version {pomona.__version__}"), proc.stdout
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pomona.__version__ == importlib.metadata.version("pomona") == pyproject["project"]["version"]


def test_self_contained_groups_are_complete_in_main() -> None:
    """No command module adds a subcommand to a group `pomona` runs without loading the modules."""
    import click

    from pomona.cli import main as cli_main

    cli_main._register_optional()
    for name in sorted(cli_main.SELF_CONTAINED):
        cmd = cli_main.main.commands[name]
        found = cmd.commands.values() if isinstance(cmd, click.Group) else [cmd]
        for sub in found:
            assert sub.callback is not None
            module = getattr(sub.callback, "__module__", None)
            assert module == "pomona.cli.main", f"{name} {sub.name}: defined in {module}"


def test_stores_are_imported_on_first_use_and_by_the_server() -> None:
    """A unit of work imports a store's module when it is first read; load_stores imports them all."""
    code = (
        "import sys\n"
        "from pomona.storage.sql import SqlDatabase, SqlUnitOfWork\n"
        "db = SqlDatabase('sqlite://')\n"
        "before = 'pomona.storage.push_sql' in sys.modules\n"
        "with db.unit_of_work() as uow:\n"
        "    uow.pushes\n"
        "used = 'pomona.storage.push_sql' in sys.modules\n"
        "SqlUnitOfWork.load_stores()\n"
        "print(before, used, 'pomona.storage.console_sql' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]


def test_the_head_read_from_the_files_is_alembics() -> None:
    """The head revision read from the migration files' text is the one Alembic walks to."""
    from pomona.storage import migrate

    assert migrate.head_from_files() == migrate.head()


@pytest.mark.parametrize("revision", ["0001", None])
def test_a_database_below_the_head_is_migrated(tmp_path: Path, revision: str | None) -> None:
    """A database at an older revision, or without one, is upgraded to the head by build()."""
    from pomona.app import Settings, build
    from pomona.storage import migrate
    from pomona.storage.sql import SqlDatabase

    settings = Settings(data_dir=tmp_path)
    db = SqlDatabase(settings.url())
    if revision is not None:
        migrate.upgrade(db.engine, revision)
    assert migrate.stored_revisions(db.engine) == (None if revision is None else [revision])
    db.dispose()
    p = build(settings)
    try:
        assert migrate.stored_revisions(p.db.engine) == [migrate.head()]
        assert p.admin.list_tenants() == []
    finally:
        p.close()


# --- the read-only fast path (pomona.fastread, storage/quick_read.py) --------------------------------
def _fleet(settings: Settings) -> None:
    """Three tenants, made out of name order, one with a push certificate (sealed key, an expiry)."""
    from pomona.app import build
    from pomona.pki.sealing import KeyringSealer, server_keys

    p = build(settings)
    try:
        for name, key_type in (("initech", "p256"), ("acme", "rsa"), ("globex", "p256")):
            p.admin.create_tenant(name, f"{name}.example", key_type=key_type, authority="pomona", seats=3)
        acme = p.admin.get_tenant("acme")
        sealer = KeyringSealer(server_keys(settings.data_dir, settings.server_key()))
        when = datetime(2027, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
        with p.db.unit_of_work() as uow:
            key = sealer.seal(b"push key", f"push-key:{acme.id}")
            uow.tenants.set_push_cert(acme.id, b"push cert", key, "com.apple.mgmt.acme", when)
    finally:
        p.close()


@pytest.fixture
def fleet(db_url: str, tmp_path: Path) -> Settings:
    """Settings naming a database of each kind holding :func:`_fleet`; on SQLite the data directory's
    own database (what the fast path reads), on PostgreSQL POMONA_DATABASE_URL's."""
    from pomona.settings import Settings

    if db_url.startswith("sqlite"):
        assert db_url == f"sqlite:///{tmp_path / 'pomona.db'}"
        tmp_path.chmod(0o700)
        settings = Settings(data_dir=tmp_path)
    else:
        tmp_path.chmod(0o700)
        settings = Settings(data_dir=tmp_path, database_url=db_url)
    _fleet(settings)
    return settings


def _listed(settings: Settings) -> list[object]:
    from pomona.app import build

    p = build(settings)
    try:
        return list(p.admin.list_tenants())
    finally:
        p.close()


def test_tenant_list_prints_what_the_store_reads(fleet: Settings) -> None:
    """`tenant list --json` prints the tenants the store reads; the fast path reads equal records on the
    raw driver, sqlite3 or psycopg."""
    from pomona import fastread
    from pomona.cli.main import main
    from pomona.presenters import tenant_json

    expected = _listed(fleet)
    quick = fastread.tenants(fleet)
    assert quick == expected and len(expected) == 3
    assert [x.name for x in expected] == ["acme", "globex", "initech"]
    assert expected[0].push_not_after == datetime(2027, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
    env = {"POMONA_DATA_DIR": str(fleet.data_dir), "POMONA_DATABASE_URL": fleet.database_url}
    res = CliRunner().invoke(main, ["tenant", "list", "--json"], env=env)
    assert res.exit_code == 0, res.output
    rows = [{**tenant_json(x), "mdm_authority": x.mdm_authority} for x in expected]  # type: ignore[arg-type]
    assert json.loads(res.output) == rows


def _sqlite_fleet(tmp_path: Path) -> Settings:
    from pomona.settings import Settings

    tmp_path.mkdir(mode=0o700, exist_ok=True)
    tmp_path.chmod(0o700)
    settings = Settings(data_dir=tmp_path)
    _fleet(settings)
    return settings


def _execute(settings: Settings, sql: str) -> None:
    conn = sqlite3.connect(settings.data_dir / "pomona.db")
    with conn:
        conn.execute(sql)
    conn.close()


def test_a_database_needing_start_up_work_is_left_to_build(tmp_path: Path) -> None:
    """An older revision, a plaintext secret, a private directory opened to others or no database at
    all: the fast path declines (None) and `tenant list` takes build(), which migrates and seals."""
    from pomona import fastread
    from pomona.settings import Settings

    assert fastread.tenants(Settings(data_dir=tmp_path / "none")) is None
    assert not (tmp_path / "none").exists()  # nothing made by the fast path
    settings = _sqlite_fleet(tmp_path / "data")
    assert fastread.tenants(settings) is not None
    _execute(settings, "UPDATE tenants SET push_pending_key = X'2d2d2d' WHERE name = 'globex'")
    assert fastread.tenants(settings) is None
    _listed(settings)  # build() seals it
    assert fastread.tenants(settings) is not None
    settings.data_dir.chmod(0o755)
    assert fastread.tenants(settings) is None
    settings.data_dir.chmod(0o700)
    _execute(settings, "UPDATE alembic_version SET version_num = '0001'")
    assert fastread.tenants(settings) is None


def test_another_server_key_is_refused(tmp_path: Path) -> None:
    """Under another server key the fast path declines (no secret is current) and build() refuses; a
    secret under the current key's id that the key does not open stops the fast path itself. Both:
    SERVER_KEY_MISMATCH, and `tenant list` exits 2 naming it."""
    from pomona import fastread
    from pomona.cli.main import main
    from pomona.domain.errors import ServerKeyError
    from pomona.settings import Settings

    settings = _sqlite_fleet(tmp_path)
    other = base64.b64encode(os.urandom(32)).decode()
    assert fastread.tenants(Settings(data_dir=tmp_path, secret_key=other)) is None  # type: ignore[arg-type]
    env = {"POMONA_DATA_DIR": str(settings.data_dir), "POMONA_SECRET_KEY": other}
    res = CliRunner().invoke(main, ["tenant", "list"], env=env)
    assert res.exit_code == 2 and "SERVER_KEY_MISMATCH" in res.output, res.output
    # The last byte of every sealed CA key flipped: still under the current key's id, not opened by it.
    conn = sqlite3.connect(settings.data_dir / "pomona.db")
    with conn:
        for tenant_id, sealed in conn.execute("SELECT id, ca_key_pem FROM tenants").fetchall():
            flipped = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
            conn.execute("UPDATE tenants SET ca_key_pem = ? WHERE id = ?", (flipped, tenant_id))
    conn.close()
    with pytest.raises(ServerKeyError):
        fastread.tenants(settings)
    res = CliRunner().invoke(main, ["tenant", "list"], env={"POMONA_DATA_DIR": str(settings.data_dir)})
    assert res.exit_code == 2 and "SERVER_KEY_MISMATCH" in res.output, res.output


def test_postgresql_needing_start_up_work_is_left_to_build(pg_empty_url: str, tmp_path: Path) -> None:
    """On PostgreSQL the fast path declines a database not migrated yet, one it cannot reach, and a
    URL of another driver; `tenant list` then migrates the new database through build()."""
    from pomona import fastread
    from pomona.cli.main import main
    from pomona.settings import Settings

    tmp_path.chmod(0o700)
    assert fastread.tenants(Settings(data_dir=tmp_path, database_url=pg_empty_url)) is None
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"
    assert fastread.tenants(Settings(data_dir=tmp_path, database_url=unreachable)) is None
    other = "postgresql+asyncpg://" + pg_empty_url.split("://", 1)[1]
    assert fastread.tenants(Settings(data_dir=tmp_path, database_url=other)) is None
    env = {"POMONA_DATA_DIR": str(tmp_path), "POMONA_DATABASE_URL": pg_empty_url}
    res = CliRunner().invoke(main, ["tenant", "list", "--json"], env=env)
    assert res.exit_code == 0 and json.loads(res.output) == [], res.output
    assert fastread.tenants(Settings(data_dir=tmp_path, database_url=pg_empty_url)) == []
