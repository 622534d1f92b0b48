"""`pomona doctor` against a real `pomona serve` over HTTPS with certificates this test makes: a good
deployment passes; a self-signed, misnamed, expiring or unreachable public URL, an exposed server key and
a database not migrated are each named by their reason code; bad input exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import free_port, setup_tenant
from pomona.app import Settings, build
from pomona.domain.reasons import ReasonCode

NOW = datetime.now(UTC)


@dataclass
class Pki:
    ca_pem: bytes
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca() -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Doctor test CA"))
        .issuer_name(_name("Doctor test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pki(cert.public_bytes(serialization.Encoding.PEM), cert, key)


def make_leaf(folder: Path, ca: Pki | None, host: str = "localhost", days: int = 90) -> tuple[Path, Path]:
    """A server certificate for `host` (and 127.0.0.1), signed by `ca` (None: self-signed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _name(host) if ca is None else ca.ca_cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host)]
                + ([x509.IPAddress(IPv4Address("127.0.0.1"))] if host == "localhost" else [])
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.ca_key.public_key()), critical=False
        )
    cert = builder.sign(key if ca is None else ca.ca_key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tls.pem", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
    env["POMONA_DATA_DIR"] = str(data_dir)
    return env


@dataclass
class Https:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]


def serve_https(data_dir: Path, cert: Path, key: Path) -> Https:
    """A tenant with a stand-in push certificate, then `pomona serve` over HTTPS on localhost."""
    port = free_port()
    url = f"https://localhost:{port}"
    p = build(Settings(data_dir=data_dir, public_url=url))
    try:
        setup_tenant(p, "acme")
    finally:
        p.close()
    cmd = [sys.executable, "-m", "pomona", "serve", "--port", str(port), "--public-url", url]
    cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    log = data_dir / "serve.log"
    proc = subprocess.Popen(cmd, env=_env(data_dir), stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1)
            return Https(url, data_dir, proc)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(log.read_text())


@pytest.fixture
def servers() -> Iterator[list[Https]]:
    started: list[Https] = []
    yield started
    for s in started:
        s.proc.terminate()
        s.proc.wait(10)


def doctor(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "pomona", "doctor", "--json", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}


def by_check(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"]}


def codes(line: dict[str, Any]) -> list[str]:
    return [f["code"] for f in line["findings"]]


class TestGoodDeployment:
    def test_a_trusted_certificate_passes_every_check(self, tmp_path: Path, servers: list[Https]) -> None:
        """With a certificate from a CA the check trusts (--ca-file), every check is ok or skipped (the
        DNS of a localhost URL), exit 0; the recorded public URL is the one checked."""
        ca = make_ca()
        (tmp_path / "ca.pem").write_bytes(ca.ca_pem)
        s = serve_https(tmp_path / "data", *make_leaf(tmp_path / "good", ca))
        servers.append(s)
        code, report = doctor(s.data_dir, "--ca-file", str(tmp_path / "ca.pem"))
        checks = by_check(report)
        assert code == 0 and report["ok"], report
        assert checks["public_url"]["subject"] == s.url
        for name in ("data_folder", "database", "public_url", "tls", "clock", "push_certificate"):
            assert checks[name]["status"] == "ok", checks[name]
        assert checks["tls"]["note"] == "expires" and checks["dns"]["status"] == "skipped"

    def test_the_table_for_people(self, tmp_path: Path, servers: list[Https]) -> None:
        """Without --json the report is a table naming each check; the exit code is the same."""
        ca = make_ca()
        (tmp_path / "ca.pem").write_bytes(ca.ca_pem)
        s = serve_https(tmp_path / "data", *make_leaf(tmp_path / "good", ca))
        servers.append(s)
        out = subprocess.run(
            [sys.executable, "-m", "pomona", "doctor", "--ca-file", str(tmp_path / "ca.pem")],
            env={**_env(s.data_dir), "COLUMNS": "160"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        for label in ("Public URL", "TLS certificate", "Clock", "Push certificate", "Database"):
            assert label in out.stdout


class TestBadCertificates:
    @pytest.mark.parametrize(
        ("kind", "problem"), [("self_signed", "self_signed"), ("other_name", "name_mismatch")]
    )
    def test_a_certificate_devices_refuse(
        self, kind: str, problem: str, tmp_path: Path, servers: list[Https]
    ) -> None:
        """A self-signed certificate, or one for another host name, fails the TLS check with
        TLS_CERT_INVALID naming the problem; exit 1."""
        ca = make_ca()
        (tmp_path / "ca.pem").write_bytes(ca.ca_pem)
        leaf = (
            make_leaf(tmp_path / "bad", None)
            if kind == "self_signed"
            else make_leaf(tmp_path / "bad", ca, host="other.example")
        )
        s = serve_https(tmp_path / "data", *leaf)
        servers.append(s)
        code, report = doctor(s.data_dir, "--ca-file", str(tmp_path / "ca.pem"))
        tls = by_check(report)["tls"]
        assert code == 1 and tls["status"] == "fail"
        assert codes(tls) == [ReasonCode.TLS_CERT_INVALID.value]
        assert tls["findings"][0]["facts"]["problem"] == problem
        assert by_check(report)["clock"]["status"] == "ok"  # the Date header is read all the same

    def test_a_certificate_expiring_within_30_days_warns(self, tmp_path: Path, servers: list[Https]) -> None:
        """A trusted certificate with 10 days left is a TLS_CERT_EXPIRING warning; a warning alone exits 0."""
        ca = make_ca()
        (tmp_path / "ca.pem").write_bytes(ca.ca_pem)
        s = serve_https(tmp_path / "data", *make_leaf(tmp_path / "soon", ca, days=10))
        servers.append(s)
        code, report = doctor(s.data_dir, "--ca-file", str(tmp_path / "ca.pem"))
        tls = by_check(report)["tls"]
        assert code == 0 and tls["status"] == "warning"
        assert codes(tls) == [ReasonCode.TLS_CERT_EXPIRING.value]
        assert tls["findings"][0]["facts"]["threshold_days"] == 14

    def test_an_unreachable_public_url(self, tmp_path: Path) -> None:
        """A public URL nothing listens on is PUBLIC_URL_UNREACHABLE; its TLS and clock are skipped."""
        data = tmp_path / "data"
        p = build(Settings(data_dir=data))
        p.close()
        code, report = doctor(data, "--public-url", f"https://localhost:{free_port()}")
        checks = by_check(report)
        assert code == 1 and codes(checks["public_url"]) == [ReasonCode.PUBLIC_URL_UNREACHABLE.value]
        assert checks["tls"]["status"] == checks["clock"]["status"] == "skipped"


class TestLocalState:
    def test_a_server_key_others_can_read(self, tmp_path: Path) -> None:
        """server.key readable by others fails the data folder check with SERVER_KEY_EXPOSED."""
        data = tmp_path / "data"
        build(Settings(data_dir=data)).close()
        (data / "server.key").chmod(0o644)
        code, report = doctor(data, "--public-url", f"http://127.0.0.1:{free_port()}")
        line = by_check(report)["data_folder"]
        assert code == 1 and codes(line) == [ReasonCode.SERVER_KEY_EXPOSED.value]
        assert line["findings"][0]["facts"]["mode"] == "644"

    def test_a_database_not_migrated(self, tmp_path: Path) -> None:
        """An empty database is MIGRATIONS_PENDING (doctor does not migrate it); the tenant checks are
        skipped."""
        code, report = doctor(tmp_path / "empty", "--public-url", f"http://127.0.0.1:{free_port()}")
        checks = by_check(report)
        assert code == 1 and codes(checks["database"]) == [ReasonCode.MIGRATIONS_PENDING.value]
        assert checks["push_certificate"]["status"] == "skipped"

    def test_a_database_that_does_not_answer(self, tmp_path: Path) -> None:
        """An unreachable PostgreSQL is DATABASE_UNAVAILABLE (its password not shown); with no public URL
        to read, the public URL and tenant checks are skipped; exit 1, no traceback."""
        url = f"postgresql://pomona:s3cret@127.0.0.1:{free_port()}/pomona"
        out = subprocess.run(
            [sys.executable, "-m", "pomona", "doctor", "--json"],
            env={**_env(tmp_path), "POMONA_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        checks = by_check(json.loads(out.stdout))
        assert codes(checks["database"]) == [ReasonCode.DATABASE_UNAVAILABLE.value]
        assert "s3cret" not in out.stdout
        assert checks["public_url"]["status"] == checks["push_certificate"]["status"] == "skipped"

    @pytest.mark.parametrize("args", [["--ca-file", "/nonexistent/ca.pem"], ["--public-url", "mdm.example"]])
    def test_bad_input_exits_2(self, tmp_path: Path, args: list[str]) -> None:
        """A missing --ca-file or a public URL without a scheme is bad input: one line, exit 2."""
        code, report = doctor(tmp_path, *args)
        assert code == 2 and report["reason"] == ReasonCode.INVALID_INPUT.value
