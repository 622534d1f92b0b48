"""End to end: the CLI sets up a tenant, a real uvicorn process serves it, virtual devices enroll over
HTTP, DeviceInformation goes out through the admin API and comes back Acknowledged. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import free_port, start_server
from pomona.testing.pushcert import make_standin_push_cert
from pomona.testing.virtual_device import VirtualDevice


def cli(data_dir: Path, database_url: str | None, *args: str) -> Any:
    env = dict(os.environ)
    env.pop("POMONA_DATABASE_URL", None)
    if database_url:
        env["POMONA_DATABASE_URL"] = database_url
    out = subprocess.run(
        [sys.executable, "-m", "pomona", *args, "--data-dir", str(data_dir), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


class TestLiveServer:
    def test_cli_setup_enroll_command_inventory(self, tmp_path: Path, database: str | None) -> None:
        """Set up with the CLI, enroll over real HTTP, run DeviceInformation, see model, OS and serial."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cert, key = make_standin_push_cert()
        (tmp_path / "push.pem").write_bytes(cert)
        (tmp_path / "push.key").write_bytes(key)
        cli(tmp_path, database, "tenant", "create", "acme", "--domain", "acme.example")
        cli(tmp_path, database, "tenant", "set-authority", "--tenant", "acme", "pomona")
        cli(tmp_path, database, "licence", "set", "--tenant", "acme", "--seats", "10")
        up = cli(
            tmp_path,
            database,
            "apns",
            "upload",
            "--tenant",
            "acme",
            "--cert",
            str(tmp_path / "push.pem"),
            "--key",
            str(tmp_path / "push.key"),
        )
        assert str(up["topic"]).startswith("com.apple.mgmt.External.")
        cli(tmp_path, database, "user", "create", "--tenant", "acme", "--upn", "ana@acme.example", "--dem")
        cli(tmp_path, database, "licence", "assign", "--tenant", "acme", "--user", "ana@acme.example")
        link = cli(
            tmp_path,
            database,
            "enroll-token",
            "create",
            "--tenant",
            "acme",
            "--user",
            "ana@acme.example",
            "--uses",
            "8",
            "--expires",
            "1h",
            "--public-url",
            base,
        )
        admin = cli(tmp_path, database, "token", "create", "--tenant", "acme")["token"]
        server = start_server(tmp_path, database, port=port)
        try:
            # A fleet through the user-facing simulator ...
            env = dict(os.environ, POMONA_LANG="en")
            sim = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pomona",
                    "simulate",
                    "--enroll-url",
                    str(link["url"]),
                    "--devices",
                    "5",
                    "--concurrency",
                    "3",
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            assert sim.returncode == 0, sim.stderr
            summary = json.loads(sim.stdout)
            assert summary["enrolled"] == 5 and not summary["failed"]
            # ... and devices we keep, to answer commands.
            devices = [
                VirtualDevice(str(link["url"]), product=p, os_version=v)
                for p, v in (("iPhone15,2", "17.4"), ("iPad13,18", "16.7"))
            ]
            for d in devices:
                d.enroll()
            h = {"Authorization": f"Bearer {admin}"}
            r = httpx.post(
                f"{base}/api/v1/tenants/acme/commands",
                headers=h,
                json={"request_type": "DeviceInformation", "devices": [d.udid for d in devices]},
            )
            assert r.status_code == 201, r.text
            uuids = [c["command_uuid"] for c in r.json()["commands"]]
            for d in devices:
                assert [x.status for x in d.poll()] == ["Acknowledged"]
            for u in uuids:
                assert (
                    httpx.get(f"{base}/api/v1/tenants/acme/commands/{u}", headers=h).json()["status"]
                    == "Acknowledged"
                )
            listed = httpx.get(f"{base}/api/v1/tenants/acme/devices", headers=h).json()
            assert listed["total"] == 7
            rows = {row["serial"]: row for row in listed["devices"]}
            for d in devices:
                row = rows[d.serial]
                assert (row["product_name"], row["os_version"], row["model_name"]) == (
                    d.product,
                    d.os_version,
                    d.facts.model_name,
                )
            cli_list = cli(tmp_path, database, "device", "list", "--tenant", "acme")
            assert isinstance(cli_list, list) and {row["serial"] for row in cli_list} == set(rows)
        finally:
            server.stop()
