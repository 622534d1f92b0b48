"""`pomona backup` and `pomona restore`: a backup taken while the real server runs, the database wiped,
the backup restored, and the devices enrolled before it check in again with their identities and get the
commands queued before it; and each refusal of a restore, with its reason code."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from e2e.conftest import live_server_with_tenant
from helpers import cli, same_data_dir, start_server  # noqa: F401
from pomona.app import Settings, build
from pomona.storage.migrate import known_revisions, upgrade
from pomona.testing.virtual_device import VirtualDevice


def pomona(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `pomona` command on the data folder ``data`` (SQLite)."""
    full = {**os.environ, "POMONA_DATA_DIR": str(data), **(env or {})}
    full.pop("POMONA_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pomona", *args], env=full, capture_output=True, text=True, timeout=120
    )


def reason(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    return str(json.loads(done.stdout)["reason"])


def run(monkeypatch: pytest.MonkeyPatch, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pomona ARGS` in this process (click's runner) on the data folder ``data`` (SQLite): faster than
    a process for the refusals; the cycle above runs the real command."""
    from click.testing import CliRunner

    from pomona.cli.main import main

    monkeypatch.setenv("POMONA_DATA_DIR", str(data))
    monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
    res = CliRunner().invoke(main, list(args))
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, "")


def wipe(data: Path) -> None:
    for name in ("pomona.db", "pomona.db-wal", "pomona.db-shm"):
        (data / name).unlink(missing_ok=True)


class TestBackupRestoreCycle:
    def test_devices_check_in_after_restore(self, tmp_path: Path) -> None:
        """Backed up while the server runs, wiped, restored: enrolled devices check in again with the
        identities they had, a command queued before the backup is still delivered, and a device enrolled
        after the backup is unknown (the restore is the backup's moment)."""
        data = tmp_path / "data"
        server, setup = live_server_with_tenant(data, None)
        port = int(server.url.rsplit(":", 1)[1])
        h = {"Authorization": f"Bearer {setup.admin_token}"}
        try:
            devices = [VirtualDevice(setup.enroll_url) for _ in range(2)]
            for d in devices:
                d.enroll()
            r = httpx.post(
                f"{server.url}/api/v1/tenants/acme/commands",
                headers=h,
                json={"request_type": "DeviceInformation", "devices": [devices[0].udid]},
            )
            assert r.status_code == 201, r.text
            queued = r.json()["commands"][0]["command_uuid"]
            done = pomona(data, "backup", "--out", str(tmp_path / "pomona.backup"), "--json")
            assert done.returncode == 0, done.stderr
            info = json.loads(done.stdout)
            assert info["revision"] == known_revisions()[-1] and info["tenants"] == 1
            assert info["key_file"] == str(data / "server.key") and len(info["key_ids"]) == 1
            late = VirtualDevice(setup.enroll_url)
            late.enroll()  # after the backup
        finally:
            server.stop()
        wipe(data)
        done = pomona(data, "restore", "--from", str(tmp_path / "pomona.backup"), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["tenants"] == 1
        server = start_server(data, port=port)
        try:
            handled = devices[0].poll()
            assert [(c.command_uuid, c.status) for c in handled] == [(queued, "Acknowledged")]
            assert devices[1].poll() == []
            status = httpx.get(f"{server.url}/api/v1/tenants/acme/commands/{queued}", headers=h)
            assert status.json()["status"] == "Acknowledged"
            with pytest.raises(Exception, match="401|403|UNKNOWN|unrecogni"):
                late.poll()
        finally:
            server.stop()

    def test_backup_is_one_private_file(self, tmp_path: Path) -> None:
        """The backup is a self-contained SQLite file (no WAL), readable by the server's user only."""
        data = tmp_path / "data"
        build(Settings(data_dir=data)).close()
        out = tmp_path / "b.db"
        assert pomona(data, "backup", "--out", str(out)).returncode == 0
        assert oct(out.stat().st_mode & 0o777) == "0o600"
        with sqlite3.connect(out) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert not (tmp_path / "b.db-wal").exists() and not (tmp_path / "b.db.partial").exists()


@pytest.fixture
def backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A backup of a database with one tenant (sealed secrets in it), its data folder's key beside it."""
    data = tmp_path / "origin"
    p = build(Settings(data_dir=data))
    p.admin.create_tenant("acme", "acme.example")
    p.close()
    out = tmp_path / "acme.backup"
    assert run(monkeypatch, data, "backup", "--out", str(out)).returncode == 0
    return out


class TestRestoreRefusals:
    def test_not_empty_without_force(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backup: Path
    ) -> None:
        """A database with tenants is not replaced without --force (RESTORE_TARGET_NOT_EMPTY); with it, it
        is."""
        origin = tmp_path / "origin"
        assert (
            reason(run(monkeypatch, origin, "restore", "--from", str(backup), "--json"))
            == "RESTORE_TARGET_NOT_EMPTY"
        )
        assert run(monkeypatch, origin, "restore", "--from", str(backup), "--force").returncode == 0

    def test_another_key(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backup: Path) -> None:
        """A data folder with another server key refuses the backup (SERVER_KEY_MISMATCH), and its
        database is left as it was."""
        other = tmp_path / "other"
        build(Settings(data_dir=other)).close()
        done = run(monkeypatch, other, "restore", "--from", str(backup), "--json")
        assert reason(done) == "SERVER_KEY_MISMATCH"
        assert "server.key" in json.loads(done.stdout)["message"]
        assert run(monkeypatch, other, "tenant", "list", "--json").stdout.count('"name"') == 0

    def test_no_key_is_not_made_up(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backup: Path
    ) -> None:
        """A data folder without a server key refuses (SERVER_KEY_MISMATCH) without creating one; with the
        backed-up key copied in, the restore works and the tenant is back."""
        fresh = tmp_path / "fresh"
        assert (
            reason(run(monkeypatch, fresh, "restore", "--from", str(backup), "--json"))
            == "SERVER_KEY_MISMATCH"
        )
        assert not (fresh / "server.key").exists()
        (fresh / "server.key").write_bytes((tmp_path / "origin" / "server.key").read_bytes())
        assert run(monkeypatch, fresh, "restore", "--from", str(backup)).returncode == 0
        assert '"acme"' in run(monkeypatch, fresh, "tenant", "list", "--json").stdout

    def test_not_a_backup(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A missing file, a file that is not SQLite and an SQLite file that is not Pomona's are refused
        (BACKUP_INVALID)."""
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"not a database at all" * 10)
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE t (x)")
        for path in (tmp_path / "missing.db", junk, other):
            done = run(monkeypatch, tmp_path / "d", "restore", "--from", str(path), "--json")
            assert reason(done) == "BACKUP_INVALID", path

    def test_newer_backup(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backup: Path) -> None:
        """A backup at a migration this version does not ship is refused (BACKUP_TOO_NEW)."""
        with sqlite3.connect(backup) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999'")
        done = run(monkeypatch, tmp_path / "d", "restore", "--from", str(backup), "--json")
        assert reason(done) == "BACKUP_TOO_NEW"

    def test_older_backup_migrates_up(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A backup from an older version (migration 0007) is restored and migrated up to this one."""
        old = tmp_path / "old.db"
        upgrade(create_engine(f"sqlite:///{old}"), "0007")
        done = run(monkeypatch, tmp_path / "d", "restore", "--from", str(old), "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["from_revision"], report["revision"]) == ("0007", known_revisions()[-1])


class TestProgress:
    def test_bar_on_a_terminal_only(self, tmp_path: Path) -> None:
        """On a terminal `pomona backup` draws a progress bar on stderr; piped (a timer's log), stderr
        stays empty and stdout has the two result lines."""
        import pty

        data = tmp_path / "data"
        build(Settings(data_dir=data)).close()
        piped = pomona(data, "backup", "--out", str(tmp_path / "a.db"))
        assert piped.returncode == 0 and piped.stderr == "" and len(piped.stdout.splitlines()) == 2
        master, slave = pty.openpty()
        env = {**os.environ, "POMONA_DATA_DIR": str(data), "POMONA_LANG": "en"}
        env.pop("POMONA_DATABASE_URL", None)
        done = subprocess.run(
            [sys.executable, "-m", "pomona", "backup", "--out", str(tmp_path / "b.db")],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
            timeout=120,
        )
        os.close(slave)
        drawn = b""
        try:
            while chunk := os.read(master, 65536):
                drawn += chunk
        except OSError:  # the terminal's other end closed
            pass
        os.close(master)
        assert done.returncode == 0
        assert b"Backing up" in drawn and "\u2501".encode() in drawn  # the label and the bar


class TestOnlineCopy:
    def test_snapshot_while_writes_go_on(self, tmp_path: Path) -> None:
        """The copy is the database at its start, and finishes, though another connection writes between
        every two steps (without the read snapshot SQLite would restart it after each write)."""
        from pomona.storage.backup import STEP_PAGES, copy_database

        source = tmp_path / "live.db"
        writer = sqlite3.connect(source, isolation_level=None)
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("CREATE TABLE t (x BLOB)")
        writer.execute("BEGIN")
        rows = 3 * STEP_PAGES * 4  # three steps and more (four rows fill a 4 KiB page)
        for _ in range(rows):
            writer.execute("INSERT INTO t VALUES (randomblob(1000))")
        writer.execute("COMMIT")
        steps: list[tuple[int, int]] = []

        def write_meanwhile(done: int, total: int) -> None:
            steps.append((done, total))
            writer.execute("INSERT INTO t VALUES (randomblob(1000))")

        copy_database(source, tmp_path / "copy.db", write_meanwhile)
        assert len(steps) >= 3 and steps[-1][0] == steps[-1][1]
        with sqlite3.connect(tmp_path / "copy.db") as copy:
            assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == rows
        assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == rows + len(steps)
        writer.close()


class TestPostgres:
    def test_backup_names_pg_dump(self, monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
        """On PostgreSQL, backup and restore refuse with BACKUP_NOT_SQLITE and print the exact pg_dump
        and pg_restore commands for this database, without its password."""
        url = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
        for args in (["backup", "--out", "x.dump"], ["restore", "--from", "x.dump"]):
            code, out = cli(monkeypatch, url, *args, "--json")
            data = json.loads(out)
            assert (code, data["reason"]) == (2, "BACKUP_NOT_SQLITE")
            assert "pg_dump --format=custom --file=pomona.dump 'postgresql://" in data["message"]
            assert "+psycopg" not in data["message"]
