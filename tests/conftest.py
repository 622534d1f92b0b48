"""Shared fixtures: the shared/ folder, both databases, a wired Pomona, live servers.

A test that needs a missing part (PostgreSQL, the shared vectors, a system tool) fails under CI=true and
is skipped LOUDLY elsewhere, so a developer machine without PostgreSQL still runs the rest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI") == "true"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def missing(what: str) -> None:
    """Fail in CI, skip loudly elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true and {what}", pytrace=False)
    pytest.skip(f"MISSING PART: {what}")


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "vectors").is_dir():
        missing(f"shared/ is not beside the project ({SHARED})")
    return SHARED


# --- databases ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("POMONA_TEST_PG", PG_DEFAULT)
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        missing(f"PostgreSQL is not reachable at {url} ({exc.__class__.__name__}); set POMONA_TEST_PG")
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"pomona_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pomona.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pomona(db_url: str, tmp_path: Path) -> Iterator[object]:
    """A fully wired Pomona (services over the real database), public URL https://pomona.test."""
    from pomona.app import Settings, build

    p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url="https://pomona.test"))
    yield p
    p.close()


# --- live servers ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    database_url: str | None
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(data_dir: Path, database_url: str | None = None, *, workers: int = 1) -> LiveServer:
    """Run `pomona serve` as a real uvicorn process on 127.0.0.1 and wait until it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.pop("POMONA_DATABASE_URL", None)
    if database_url:
        env["POMONA_DATABASE_URL"] = database_url
    log = data_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "pomona.cli.main", "serve", "--data-dir", str(data_dir), "--port", str(port),
           "--public-url", url, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return LiveServer(url, proc, data_dir, database_url, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")
