"""docs/push-certificate.md's shell blocks, run literally, with the APNs emulator playing Apple's portal."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from helpers import setup_tenant
from pomona.app import Settings, build, create_app
from pomona.pki.apns_certs import decode_vendor_signed_request
from pomona.testing.apns_emulator import ApnsEmulator
from pomona.testing.virtual_device import VirtualDevice

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "push-certificate.md"
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
PLAIN_CSR, VENDOR_CSR, UPLOAD, RENEW_UPLOAD, REPLACE = range(5)


def shell_blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text("utf-8"))


def vendor_identity(folder: Path) -> None:
    """vendor-chain.pem and vendor.key: a stand-in for the MDM vendor certificate Apple issues."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MDM Vendor: Pomona doc test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "vendor-chain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "vendor.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture
def apple(tmp_path: Path) -> Iterator[ApnsEmulator]:
    with ApnsEmulator.start(tmp_path / "apple") as emu:
        yield emu


class TestPushCertificateDoc:
    def test_the_whole_path_runs(self, tmp_path: Path, apple: ApnsEmulator) -> None:
        """CSR, vendor signing, Apple's certificate, upload, renewal (same topic) and replacement run as
        the doc shows them; another topic without --replace is refused with APNS_TOPIC_CHANGED."""
        blocks = shell_blocks()
        assert len(blocks) == 5, blocks
        data, work = tmp_path / "data", tmp_path / "work"
        work.mkdir()
        vendor_identity(work)
        p = build(Settings(data_dir=data))
        try:
            setup = setup_tenant(p, "acme", push=False)
        finally:
            p.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
        env.update(
            POMONA_DATA_DIR=str(data),
            POMONA_LANG="en",
            POMONA_APNS_URL=apple.url,  # the canary pushes go to the emulator, not to Apple
            POMONA_APNS_CA=str(apple.ca_path),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        )

        def run(script: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                ["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=180
            )
            assert (done.returncode == 0) is ok, done.stdout + done.stderr
            assert "Traceback" not in done.stdout + done.stderr
            return done

        def portal(topic: str | None) -> str:
            """Apple's Push Certificates Portal: the certificate for the last vendor-signed request."""
            request = (work / "acme-push-request.txt").read_text()
            assert decode_vendor_signed_request(request).signature_valid
            cert = apple.sign_push_request(request, topic)
            (work / "acme-push.pem").write_bytes(cert)
            return (
                x509.load_pem_x509_certificate(cert).subject.get_attributes_for_oid(NameOID.USER_ID)[0].value
            )  # type: ignore[return-value]

        plain = run(blocks[PLAIN_CSR])
        assert "docs/push-certificate.md" in plain.stderr
        assert (work / "acme-push.csr").read_text().startswith("-----BEGIN CERTIFICATE REQUEST-----")

        run(blocks[VENDOR_CSR])
        topic = portal(None)
        first = run(blocks[UPLOAD])
        assert f"topic {topic}" in first.stdout and "Apple ID it-admin@acme.example" in first.stdout

        p = build(Settings(data_dir=data))  # two devices enroll under the first certificate
        try:
            client = TestClient(create_app(pomona=p, eager=False), base_url="https://pomona.test")  # type: ignore[arg-type]
            for _ in range(2):
                link = p.enrollment.urls.enroll(p.admin.create_enrollment_token("acme", setup.upn).secret)
                VirtualDevice(link, client=client).enroll()  # type: ignore[arg-type]
        finally:
            p.close()

        run(blocks[VENDOR_CSR])  # "Create a new request, exactly as in step 1"
        portal(topic)  # Renew, same Apple ID: same topic
        renewed = run(blocks[RENEW_UPLOAD])
        assert "Renewal: same topic" in renewed.stdout and "pushed 2 device(s)" in renewed.stdout

        run(blocks[VENDOR_CSR])
        other = portal(None)  # Create instead of Renew (or another Apple ID): another topic
        refused = run(blocks[RENEW_UPLOAD], ok=False)
        assert "APNS_TOPIC_CHANGED" in refused.stderr + refused.stdout
        replaced = run(blocks[REPLACE])
        assert f"topic {other}" in replaced.stdout
        assert "2 enrolled device(s) can no longer be reached" in replaced.stdout
        assert "2 enrollment(s) must re-enroll" in replaced.stdout

    def test_csr_hint_names_the_guide_in_both_languages(self, tmp_path: Path) -> None:
        """`apns csr` without a vendor certificate points at docs/push-certificate.md, in en and zh-CN."""
        p = build(Settings(data_dir=tmp_path))
        try:
            setup_tenant(p, "acme", push=False)
        finally:
            p.close()
        for lang in ("en", "zh-CN"):
            env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
            env.update(
                POMONA_DATA_DIR=str(tmp_path),
                POMONA_LANG=lang,
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
            )
            done = subprocess.run(
                ["pomona", "apns", "csr", "--tenant", "acme", "--out", "x.csr"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert "docs/push-certificate.md" in done.stderr
            assert ("签名" in done.stderr) is (lang == "zh-CN")
