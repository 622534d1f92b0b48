"""The README's "Running a real server" block, run literally in a fresh folder, ends with a device enrolled.

The block runs as one bash script in a fresh clone (its own ./pomona-data, no POMONA_* variable but the
APNs emulator's). What stands in for the real world:

- the folder is a fresh clone whose `.venv` runs this checkout's sources (doc_blocks.fresh_clone), so
  `.venv/bin/pomona` is the Pomona under test;
- push.pem and push.key come from the local APNs emulator (pomona.testing.apns_emulator), as Apple's
  portal would give them; the server pushes to the emulator (POMONA_APNS_URL, POMONA_APNS_CA);
- fullchain.pem and privkey.pem are made by the test, for `localhost`, by a CA the device trusts.

Substituted, and only these: the public URL's host `mdm.acme.example` becomes `localhost:PORT`, the
listening address `--host 0.0.0.0 --port 8443` becomes `--host 127.0.0.1 --port PORT` (a free port).
Everything else, commands, options and file names, is the README's. The last command (`serve`) keeps
running; the enrollment link is what `enroll-token create` printed, and a virtual iPhone enrolls with it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from doc_blocks import ROOT, Background, fresh_clone, python_env
from helpers import free_port
from pomona.testing.apns_emulator import ApnsEmulator
from pomona.testing.virtual_device import VirtualDevice

README = ROOT / "README.md"
SECTION = "## Running a real server"
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
PUBLIC_HOST = "mdm.acme.example"


def real_server_block(readme: str | None = None) -> str:
    """The first shell block under the README's "Running a real server" heading."""
    text = README.read_text("utf-8") if readme is None else readme
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    blocks = BLOCK.findall(text[start : None if end < 0 else end])
    assert blocks, f"no ```sh block under {SECTION!r} in README.md"
    return str(blocks[0])


def localize(block: str, port: int) -> str:
    """The block with only the host and port substituted (see the module docstring)."""
    assert f"https://{PUBLIC_HOST}" in block and "--host 0.0.0.0 --port 8443" in block, block
    return block.replace(f"https://{PUBLIC_HOST}", f"https://localhost:{port}").replace(
        "--host 0.0.0.0 --port 8443", f"--host 127.0.0.1 --port {port}"
    )


def tls_files(folder: Path) -> Path:
    """fullchain.pem (leaf for localhost and 127.0.0.1, then its CA) and privkey.pem; returns the CA file."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "README test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "privkey.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "readme-ca.pem").write_bytes(ca.public_bytes(pem))
    return folder / "readme-ca.pem"


def fresh_folder(folder: Path, apple: ApnsEmulator) -> dict[str, str]:
    """The folder a new admin works in (a fresh clone with .venv), with Apple's push certificate and key;
    the environment to run in."""
    fresh_clone(folder)
    cert, key = apple.issue_push_cert()
    (folder / "push.pem").write_bytes(cert)
    (folder / "push.key").write_bytes(key)
    return python_env(POMONA_APNS_URL=apple.url, POMONA_APNS_CA=str(apple.ca_path))


@pytest.fixture
def apple(tmp_path: Path) -> Iterator[ApnsEmulator]:
    with ApnsEmulator.start(tmp_path / "apple") as emu:
        yield emu


class TestReadmeRealServer:
    def test_the_block_ends_with_a_device_enrolled(self, tmp_path: Path, apple: ApnsEmulator) -> None:
        """From an empty folder, the README's commands as written give a server on which a device enrolls
        with the printed link, and the printed admin token lists that device."""
        work = tmp_path / "pomona"
        env = fresh_folder(work, apple)
        ca = ssl.create_default_context(cafile=str(tls_files(work)))
        port = free_port()
        url = f"https://localhost:{port}"
        run = Background(localize(real_server_block(), port), work, env, "block")
        try:
            run.wait_for(
                lambda: httpx.get(f"{url}/healthz", verify=ca, timeout=1).status_code == 200, what="serving"
            )
            printed = run.out.read_text("utf-8").split()
            links = [w for w in printed if w.startswith(f"{url}/enroll/")]
            tokens = [w for w in printed if w.startswith("pom_")]
            assert len(links) == 1 and len(tokens) == 1, run.output()
            assert "Warning" not in run.output() and "Traceback" not in run.output(), run.output()
            with httpx.Client(verify=ca, timeout=30) as client:
                device = VirtualDevice(links[0], client=client)
                device.enroll()
                assert device.enrolled
                r = client.get(
                    f"{url}/api/v1/tenants/acme/devices", headers={"Authorization": f"Bearer {tokens[0]}"}
                )
            assert r.status_code == 200, r.text
            assert [d["serial"] for d in r.json()["devices"]] == [device.serial]
        finally:
            run.stop()
        assert (work / "pomona-data").is_dir()  # the README's default data folder, in the admin's folder

    def test_a_tenant_without_defaults_names_the_fixing_commands(self, tmp_path: Path) -> None:
        """Were a step missing (a user without a seat), the link warning names the command that fixes it."""
        env = python_env(POMONA_DATA_DIR=str(tmp_path / "data"))

        def pomona(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "pomona", *args], env=env, capture_output=True, text=True, timeout=120
            )

        assert pomona("tenant", "create", "acme", "--domain", "acme.example", "--seats", "0").returncode == 0
        made = pomona("user", "create", "--tenant", "acme", "--upn", "ana@acme.example")
        assert made.returncode == 0 and "Warning [LICENSES_EXHAUSTED]" in made.stderr, made.stderr
        assert "pomona licence set --tenant acme --seats N" in made.stderr, made.stderr
        link = pomona(
            "enroll-token", "create", "--tenant", "acme", "--user", "ana@acme.example",
            "--public-url", "https://mdm.acme.example",
        )  # fmt: skip
        assert link.returncode == 0 and "Warning [APNS_CERT_MISSING]" in link.stderr, link.stderr
        assert "`pomona apns upload --tenant acme --cert push.pem --key push.key`" in link.stderr
        assert "Traceback" not in made.stderr + link.stderr
