"""Secrets at rest: sealed with the server key, the data folder private, old databases sealed at start-up."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

from helpers import setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.cli.main import main
from pomona.domain.errors import ServerKeyError
from pomona.domain.reasons import ReasonCode
from pomona.pki.adapters import LocalPki
from pomona.pki.sealing import KeyringSealer
from pomona.services.admin import AdminService
from pomona.services.portal import SESSION_SECRET_KEY
from pomona.storage import schema as s
from pomona.storage.sql import SqlDatabase
from pomona.testing.virtual_device import VirtualDevice


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_secrets(db: SqlDatabase) -> list[bytes]:
    """Every value of every column that holds a secret, as the database stores it."""
    cols = [
        s.tenants.c.ca_key_pem,
        s.tenants.c.push_key_pem,
        s.tenants.c.push_pending_key,
        s.settings.c.value,
        s.webhooks.c.secret,
    ]
    out: list[bytes] = []
    with db.engine.connect() as conn:
        for c in cols:
            out += [bytes(v) for (v,) in conn.execute(select(c).where(c.is_not(None)))]
    return out


@pytest.fixture
def enrolled(pomona: Pomona) -> Iterator[Pomona]:
    """A Pomona with one tenant and one enrolled device (every secret written once)."""
    acme = setup_tenant(pomona)
    pomona.portal.session_secret()
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        VirtualDevice(acme.enroll_url, client=c).enroll()  # type: ignore[arg-type]
    yield pomona


class TestSealed:
    def test_no_private_key_in_the_database_after_enrollment(self, enrolled: Pomona) -> None:
        """After a tenant, its push certificate and an enrollment, no stored column holds a PEM private key."""
        values = raw_secrets(enrolled.db)
        assert len(values) >= 4  # CA key, push key, signing identity, session secret
        assert not [v[:40] for v in values if b"PRIVATE KEY" in v]
        assert all(v[:1] == b"\x02" for v in values)

    def test_session_secret_is_sealed_and_reads_back(self, pomona: Pomona) -> None:
        """The portal session secret is stored sealed and read back as it was written."""
        secret = pomona.portal.session_secret()
        with pomona.db.engine.connect() as conn:
            raw = conn.execute(
                select(s.settings.c.value).where(s.settings.c.key == SESSION_SECRET_KEY)
            ).scalar()
        assert raw is not None and secret.encode() not in bytes(raw)
        assert pomona.portal.session_secret() == secret


class TestPlaintextDatabaseUpgrade:
    def test_old_plaintext_database_opens_and_gets_sealed(self, db_url: str, tmp_path: Path) -> None:
        """A database written before sealing (plaintext CA key and settings) is sealed in place at start-up,
        works, and a second start changes nothing."""
        from pomona.app import SystemClock

        old = SqlDatabase(db_url)  # as an older Pomona wrote it: no sealer
        old_tenant = AdminService(old, SystemClock(), LocalPki()).create_tenant("acme", "acme.example")
        old.settings_put(SESSION_SECRET_KEY, b"old-plaintext-session-secret")
        assert any(b"PRIVATE KEY" in v for v in raw_secrets(old))
        old.dispose()

        settings = Settings(data_dir=tmp_path, database_url=db_url, public_url="https://pomona.test")
        p = build(settings)
        try:
            assert not any(b"PRIVATE KEY" in v for v in raw_secrets(p.db))
            assert p.portal.session_secret() == "old-plaintext-session-secret"
            acme = setup_tenant(p, "beta")  # the new tenant's CA, and the old one's, sign
            with TestClient(create_app(pomona=p, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
                VirtualDevice(acme.enroll_url, client=c).enroll()  # type: ignore[arg-type]
                assert c.get(f"/scep/{old_tenant.id}", params={"operation": "GetCACert"}).status_code == 200
            again = p.db.seal_at_rest()
            assert (again.sealed, again.resealed) == (0, 0) and again.current >= 3
        finally:
            p.close()
        p2 = build(settings)  # idempotent: a second start seals nothing more
        try:
            assert p2.portal.session_secret() == "old-plaintext-session-secret"
        finally:
            p2.close()


class TestWrongKey:
    def test_wrong_server_key_stops_the_start_with_a_reason(self, db_url: str, tmp_path: Path) -> None:
        """Another server key than the one that sealed the database: a clear error with its reason code,
        from build() and as one line from the CLI, never a traceback."""
        settings = Settings(data_dir=tmp_path, database_url=db_url, public_url="https://pomona.test")
        p = build(settings)
        p.signer  # noqa: B018 - made on first use (as `serve` does): now the database holds a sealed key
        p.close()
        other = Settings(
            data_dir=tmp_path,
            database_url=db_url,
            secret_key=base64.b64encode(os.urandom(32)).decode(),  # type: ignore[arg-type]
        )
        with pytest.raises(ServerKeyError) as raised:
            build(other)
        assert raised.value.reason is ReasonCode.SERVER_KEY_MISMATCH
        env = {
            "POMONA_DATA_DIR": str(tmp_path),
            "POMONA_DATABASE_URL": db_url,
            "POMONA_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        res = CliRunner().invoke(main, ["tenant", "list"], env=env)
        assert res.exit_code == 2, res.output
        assert "SERVER_KEY_MISMATCH" in res.output and "Traceback" not in res.output


class TestKeyRotation:
    def test_rotate_key_reseals_everything(self, tmp_path: Path) -> None:
        """`pomona server rotate-key` writes a new server.key, re-seals every secret under it, and the
        server starts with the new key alone."""
        data = tmp_path / "data"
        settings = Settings(data_dir=data, public_url="https://pomona.test")
        p = build(settings)
        setup_tenant(p)
        secret = p.portal.session_secret()
        p.close()
        before = (data / "server.key").read_bytes()
        res = CliRunner().invoke(main, ["server", "rotate-key", "--json"], env={"POMONA_DATA_DIR": str(data)})
        assert res.exit_code == 0, res.output
        after = (data / "server.key").read_bytes()
        assert after != before and not (data / "server.key.old").exists()
        new_id = KeyringSealer([after]).key_id
        p = build(settings)
        try:
            values = raw_secrets(p.db)
            assert all(v[1:9].hex() == new_id for v in values)
            assert p.portal.session_secret() == secret
        finally:
            p.close()


class TestFileModes:
    def test_data_folder_and_files_are_private(self, tmp_path: Path) -> None:
        """The data folder is 0700; the database, its -wal and -shm, and server.key are 0600 (umask 022)."""
        data = tmp_path / "data"
        old = os.umask(0o022)
        try:
            p = build(Settings(data_dir=data, public_url="https://pomona.test"))
            try:
                setup_tenant(p)
                assert mode(data) == 0o700
                files = {f.name: mode(f) for f in data.iterdir()}
                assert {"pomona.db", "pomona.db-wal", "pomona.db-shm", "server.key"} <= files.keys()
                assert set(files.values()) == {0o600}, files
            finally:
                p.close()
        finally:
            os.umask(old)

    def test_an_older_data_folder_is_narrowed(self, tmp_path: Path) -> None:
        """A data folder and database left readable by an older version are made private at start-up."""
        data = tmp_path / "data"
        build(Settings(data_dir=data)).close()
        os.chmod(data, 0o755)
        os.chmod(data / "pomona.db", 0o644)
        build(Settings(data_dir=data)).close()
        assert mode(data) == 0o700 and mode(data / "pomona.db") == 0o600
