"""Independent SCEP clients against a live endpoint: certmonger's scep-submit and micromdm/scep (Go).

Both must obtain a certificate with the right challenge and be refused with a wrong one. They only use
the `scep_endpoint` fixture (url, good challenge), so the same tests run against the real server.

Missing tools skip with a loud reason locally and fail under CI=true.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pomona.protocol import cms, scep

pytestmark = pytest.mark.system

SCEP_SUBMIT = Path("/usr/lib/certmonger/scep-submit")
GO_SCEP_SRC = Path("/usr/share/gocode/src/github.com/micromdm/scep")
GO_CLIENT_SRC = Path(__file__).resolve().parent / "scep_goclient" / "main.go"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"required tool missing under CI: {reason}")
    pytest.skip(f"SKIPPED, TOOL MISSING: {reason}")


def _ca_cert(url: str) -> x509.Certificate:
    """The CA certificate from GetCACert (single DER certificate or RA/CA PKCS#7)."""
    resp = httpx.get(url, params={"operation": "GetCACert"}, timeout=10)
    resp.raise_for_status()
    if resp.headers["content-type"].startswith("application/x-x509-ca-ra-cert"):
        certs = cms.load_certs_only(resp.content)
        return next(c for c in certs if c.issuer == c.subject)
    return x509.load_der_x509_certificate(resp.content)


def _assert_issued(cert: x509.Certificate, url: str, public_key: object | None = None) -> None:
    ca = _ca_cert(url)
    cert.verify_directly_issued_by(ca)
    if public_key is not None:
        assert cert.public_key() == public_key


# --------------------------------------------------------------------------------------------------
# micromdm/scep (Go)


@pytest.fixture(scope="session")
def go_scep_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build tests/e2e/scep_goclient once per session, offline, against Debian's Go sources."""
    go = shutil.which("go")
    if go is None:
        _missing("the `go` toolchain (Debian package golang-go)")
    if not GO_SCEP_SRC.is_dir():
        _missing(f"{GO_SCEP_SRC} (Debian package golang-github-micromdm-scep-dev)")
    assert go is not None
    work = tmp_path_factory.mktemp("scep_goclient")
    # The Debian package installs the module at .../micromdm/scep but its imports say .../scep/v2:
    # a GOPATH overlay with a v2 symlink lets GOPATH mode (no network, no modules) resolve both.
    overlay = work / "gopath" / "src" / "github.com" / "micromdm" / "scep"
    overlay.mkdir(parents=True)
    (overlay / "v2").symlink_to(GO_SCEP_SRC)
    build = work / "build"
    build.mkdir()
    shutil.copy(GO_CLIENT_SRC, build / "main.go")
    binary = work / "scep_goclient"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOPATH": f"{work / 'gopath'}:/usr/share/gocode",
        "GOCACHE": str(work / "gocache"),
        "CGO_ENABLED": "0",
    }
    proc = subprocess.run(
        [go, "build", "-o", str(binary), "main.go"],
        cwd=build,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the Go SCEP client failed:\n{proc.stderr}")
    return binary


def _run_go(binary: Path, url: str, challenge: str, enc: str = "aes128") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-url", url, "-challenge", challenge, "-enc", enc, "-cn", f"go-{enc}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestMicromdmGoClient:
    @pytest.mark.parametrize("enc", ["aes128", "aes256", "des"])
    def test_enrolls_with_good_challenge(
        self, go_scep_client: Path, scep_endpoint: tuple[str, str], enc: str
    ) -> None:
        """micromdm/scep (SHA-1, AES or DES envelope) gets a certificate issued by the CA."""
        url, challenge = scep_endpoint
        proc = _run_go(go_scep_client, url, challenge, enc)
        assert proc.returncode == 0, proc.stderr
        cert = x509.load_pem_x509_certificate(proc.stdout.encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"go-{enc}"
        _assert_issued(cert, url)

    def test_refused_with_wrong_challenge(self, go_scep_client: Path, scep_endpoint: tuple[str, str]) -> None:
        """micromdm/scep gets a verified CertRep FAILURE with failInfo badRequest for a wrong challenge."""
        url, _ = scep_endpoint
        proc = _run_go(go_scep_client, url, "wrong-challenge")
        assert proc.returncode == 2, proc.stderr
        assert "FAILURE failInfo=2" in proc.stdout


# --------------------------------------------------------------------------------------------------
# certmonger scep-submit


@pytest.fixture(scope="session")
def scep_submit() -> Path:
    if not SCEP_SUBMIT.exists():
        _missing(f"{SCEP_SUBMIT} (Debian package certmonger)")
    return SCEP_SUBMIT


def _self_signed(key: rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


def _open_envelope(
    envelope_pem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey, tmp: Path
) -> x509.Certificate:
    """Open scep-submit's pkcsPKIEnvelope with `openssl cms` (independent) when present, else with ours."""
    der = base64.b64decode(
        "".join(line for line in envelope_pem.splitlines() if line and "-----" not in line)
    )
    openssl = shutil.which("openssl")
    if openssl is None:
        certs = cms.load_certs_only(cms.decrypt_enveloped(der, cert, key))
    else:
        (tmp / "env.der").write_bytes(der)
        (tmp / "me.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "me.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        subprocess.run(
            [openssl, "cms", "-decrypt", "-inform", "DER", "-in", "env.der", "-recip", "me.pem", "-inkey", "me.key",
             "-binary", "-out", "certs.p7"],
            cwd=tmp, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        certs = cms.load_certs_only((tmp / "certs.p7").read_bytes())
    return next(c for c in certs if c.public_key() == key.public_key())


def _submit(
    scep_submit: Path,
    url: str,
    challenge: str,
    tmp: Path,
    encryption: cms.ContentEncryption,
    digest: cms.DigestName,
) -> tuple[subprocess.CompletedProcess[str], x509.Certificate, rsa.RSAPrivateKey]:
    """certmonger transports and checks; the PKCSReq itself is built by our client code (as certmonger's
    daemon, not scep-submit, would build it)."""
    fetched = subprocess.run([str(scep_submit), "-u", url, "-C"], capture_output=True, text=True, timeout=60)
    assert fetched.returncode == 0, fetched.stderr
    ca_pems = fetched.stdout
    (tmp / "ca.pem").write_text(ca_pems)
    ca = x509.load_pem_x509_certificates(ca_pems.encode())
    # scep-submit -C prints the RA first, then the CA: envelope to the first (RA or CA).
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _self_signed(key, "certmonger-e2e")
    csr = scep.build_csr(
        key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmonger-e2e")]), challenge
    )
    request = scep.build_pkcs_req(csr, cert, key, ca[0], encryption=encryption, digest=digest)
    (tmp / "req.pem").write_text(_pem("PKCS7", request))
    proc = subprocess.run(
        [
            str(scep_submit),
            "-u",
            url,
            "-r",
            str(tmp / "ca.pem"),
            "-N",
            str(tmp / "ca.pem"),
            "-g",
            str(tmp / "req.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, cert, key


class TestCertmongerScepSubmit:
    def test_get_ca_caps(self, scep_submit: Path, scep_endpoint: tuple[str, str]) -> None:
        """scep-submit -c reads our capabilities."""
        url, _ = scep_endpoint
        proc = subprocess.run([str(scep_submit), "-u", url, "-c"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert {"POSTPKIOperation", "AES", "SHA-256"} <= set(proc.stdout.split())

    @pytest.mark.parametrize(
        ("encryption", "digest"),
        [("aes128_cbc", "sha256"), ("aes256_cbc", "sha256"), ("tripledes_3key", "sha1")],
    )
    def test_enrolls_with_good_challenge(
        self,
        scep_submit: Path,
        scep_endpoint: tuple[str, str],
        tmp_path: Path,
        encryption: cms.ContentEncryption,
        digest: cms.DigestName,
    ) -> None:
        """scep-submit verifies our CertRep (SUCCESS) and its envelope opens to a CA-issued certificate."""
        url, challenge = scep_endpoint
        proc, cert, key = _submit(scep_submit, url, challenge, tmp_path, encryption, digest)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        issued = _open_envelope(proc.stdout, cert, key, tmp_path)
        _assert_issued(issued, url, key.public_key())

    def test_refused_with_wrong_challenge(
        self, scep_submit: Path, scep_endpoint: tuple[str, str], tmp_path: Path
    ) -> None:
        """scep-submit verifies our CertRep FAILURE and exits 2 (rejected) for a wrong challenge."""
        url, _ = scep_endpoint
        proc, _, _ = _submit(scep_submit, url, "wrong-challenge", tmp_path, "aes128_cbc", "sha256")
        assert proc.returncode == 2, proc.stdout + proc.stderr
