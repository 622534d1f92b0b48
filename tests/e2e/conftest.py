"""End-to-end fixtures: a real `pomona serve` process (uvicorn on 127.0.0.1) with a tenant set up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import LiveServer, TenantSetup, free_port, setup_tenant, start_server
from pomona.app import Settings, build


def live_server_with_tenant(
    data_dir: Path, database_url: str | None, *, uses: int = 1000
) -> tuple[LiveServer, TenantSetup]:
    """Set up a tenant as an admin would (same database), then start the real server on it."""
    port = free_port()
    p = build(Settings(data_dir=data_dir, database_url=database_url, public_url=f"http://127.0.0.1:{port}"))
    try:
        setup = setup_tenant(p, "acme", uses=uses)
    finally:
        p.close()
    return start_server(data_dir, database_url, port=port), setup


@pytest.fixture(scope="session")
def live_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, TenantSetup]]:
    server, setup = live_server_with_tenant(tmp_path_factory.mktemp("live-sqlite"), None)
    yield server, setup
    server.stop()


@pytest.fixture(scope="session")
def scep_endpoint(live_sqlite: tuple[LiveServer, TenantSetup]) -> tuple[str, str]:
    """The real server's SCEP URL for the tenant, and a good challenge (an enrollment token, 1000 uses)."""
    server, setup = live_sqlite
    challenge = urlsplit(setup.enroll_url).path.rsplit("/", 1)[-1]
    return f"{server.url}/scep/{setup.tenant_id}", challenge
