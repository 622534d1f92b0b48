"""Upgrading keeps devices: a database made by the previous release is migrated by this one, and devices
enrolled before the upgrade keep checking in and receiving commands.

The previous release's code is taken from git history (PREVIOUS_RELEASE), run in a subprocess against a
fresh database (SQLite and PostgreSQL), with virtual devices enrolling through its own app. This release
then opens the same database (running its migrations) and serves those devices, signing as they would.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from helpers import missing
from pomona.app import Pomona, Settings, build, create_app
from pomona.protocol import cms
from pomona.protocol import command as command_codec

ROOT = Path(__file__).resolve().parents[2]
# The last commit before the architecture pass (issue 8): the release whose databases must upgrade.
PREVIOUS_RELEASE = "cfd8c36"
BASE = "https://pomona.test"

# Runs with the previous release's src/ first on sys.path: enroll devices, print their identities.
ENROLL_WITH_PREVIOUS = r"""
import json, sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient
import pomona.app as app_module
from pomona.app import Settings, build, create_app
from pomona.testing.pushcert import make_standin_push_cert
from pomona.testing.virtual_device import VirtualDevice

assert app_module.__file__.startswith(sys.argv[3]), app_module.__file__  # the previous release's code
p = build(Settings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2], public_url="https://pomona.test"))
p.admin.create_tenant("acme", "acme.example")
cert, key = make_standin_push_cert()
p.admin.upload_push_cert("acme", cert, key)
p.admin.set_authority("acme", "pomona")
p.policy.set_seats("acme", 10)
p.admin.create_user("acme", "ana@acme.example")
p.policy.licence("acme", "ana@acme.example", assign=True)
url = p.enrollment.urls.enroll(p.admin.create_enrollment_token("acme", "ana@acme.example", uses=3).secret)
out = []
with TestClient(create_app(pomona=p), base_url="https://pomona.test") as client:
    for _ in range(3):
        d = VirtualDevice(url, client=client)
        d.enroll()
        out.append({
            "udid": d.udid,
            "serial": d.serial,
            "server_url": d.server_url,
            "cert": d.identity_cert.public_bytes(serialization.Encoding.PEM).decode(),
            "key": d.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        })
p.close()
print(json.dumps(out))
"""


def previous_src(tmp: Path) -> Path:
    """The previous release's src/ tree, extracted from git (fails loudly without the history)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE, "src"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        missing(f"git history with the previous release {PREVIOUS_RELEASE} is not available ({exc})")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "src"


def enroll_with_previous(tmp_path: Path, db_url: str) -> list[dict[str, str]]:
    src = previous_src(tmp_path / "previous")
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", ENROLL_WITH_PREVIOUS, str(tmp_path / "data"), db_url, str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    devices: list[dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return devices


def idle(client: TestClient, d: dict[str, str], status: str = "Idle", **extra: str) -> tuple[int, bytes]:
    """A signed command-channel request as the device sends it, with its pre-upgrade identity."""
    cert = x509.load_pem_x509_certificate(d["cert"].encode())
    key = serialization.load_pem_private_key(d["key"].encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    body = command_codec.encode_report(udid=d["udid"], status=status, **extra)
    signature = base64.b64encode(cms.sign_detached(body, cert, key)).decode()
    r = client.put(
        d["server_url"],
        content=body,
        headers={"Content-Type": "application/x-apple-aspen-mdm", "Mdm-Signature": signature},
    )
    return r.status_code, r.content


@pytest.fixture
def upgraded(empty_db_url: str, tmp_path: Path) -> tuple[Pomona, list[dict[str, str]]]:
    devices = enroll_with_previous(tmp_path, empty_db_url)  # the previous release makes the database
    p = build(Settings(data_dir=tmp_path / "data", database_url=empty_db_url, public_url=BASE))
    return p, devices


class TestUpgradeFromPreviousRelease:
    def test_devices_keep_checking_in(self, upgraded: tuple[Pomona, list[dict[str, str]]]) -> None:
        """Devices enrolled by the previous release check in after the upgrade and get a new command."""
        p, devices = upgraded
        try:
            with TestClient(create_app(pomona=p, eager=False), base_url=BASE) as client:
                for d in devices:
                    assert idle(client, d) == (200, b"")
                queued = p.commands.enqueue("acme", "DeviceInformation", {}, [devices[0]["udid"]], push=False)
                status, body = idle(client, devices[0])
                assert status == 200
                command_uuid, request_type, _ = command_codec.decode_command(body)
                assert (command_uuid, request_type) == (queued[0].command_uuid, "DeviceInformation")
                status, _ = idle(client, devices[0], status="Acknowledged", command_uuid=command_uuid)
                assert status == 200
                assert p.commands.command("acme", command_uuid).status.value == "Acknowledged"
                assert len(p.commands.list_devices("acme")[0]) == len(devices)
        finally:
            p.close()

    def test_previous_release_is_really_older(self, tmp_path: Path) -> None:
        """The code under test differs from the previous release (the upgrade path is not a no-op)."""
        src = previous_src(tmp_path / "previous")
        assert not (src / "pomona" / "presenters.py").exists()
        assert (ROOT / "src" / "pomona" / "presenters.py").exists()
