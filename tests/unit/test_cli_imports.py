"""The CLI starts without the server (issue 14): what a real `pomona` process imports, read from its
sys.modules at exit. Not timed (bench/cli_start.py prints the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Never imported by `import pomona.cli.main` nor by `pomona tenant list` on a migrated database.
SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "prometheus_client", "jinja2", "alembic")

#: Not needed to read the database and print a table: `pomona tenant list` on a migrated database imports
#: none of them (logging's structlog is imported when a line is written; the ORM is never used; the
#: stores a command does not read are imported on first use; the push service is the server's).
NOT_FOR_A_READ = (
    "structlog",
    "rich",
    "pydantic_settings",
    "sqlalchemy.orm",
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
