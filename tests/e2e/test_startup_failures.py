"""Every start-up failure is one line with its reason code and exit code 2, never a traceback; checked before
`pomona serve` says it is serving; `pomona --debug` shows the traceback (issue 11, item 3)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import free_port
from pomona.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def _pair(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as two PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mdm.acme.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    c, k = tmp / f"{name}.crt", tmp / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return c, k


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    cert, key = _pair(tmp_path, "good")
    _, other_key = _pair(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    short = tmp_path / "short.pem"  # cryptography: ParseError { kind: ShortData }
    body = cert.read_text().splitlines()
    short.write_text("\n".join([body[0], body[1][:8], body[-1]]) + "\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    return {"cert": cert, "key": key, "other_key": other_key, "junk": junk, "short": short, "file": a_file}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def serve(
    tmp_path: Path, *args: str, debug: bool = False, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """`pomona [--debug] serve ARGS` as a real process; its exit code and everything it printed."""
    full = {**os.environ, **(env or {})}
    full.setdefault("POMONA_DATA_DIR", str(tmp_path / "data"))
    if "POMONA_DATABASE_URL" not in (env or {}):
        full.pop("POMONA_DATABASE_URL", None)
    full["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), full.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pomona", *(["--debug"] if debug else []), "serve", *args]
    if "--port" not in args:
        cmd += ["--port", str(free_port())]
    done = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


def assert_one_line(code: int, out: str, reason: str) -> None:
    lines = [x for x in out.splitlines() if x.strip()]
    assert code == 2, out
    assert len(lines) == 1, out
    assert f"[{reason}]" in lines[0], out
    assert "Traceback" not in out and "serving on" not in out, out


SERVE_FAILURES = {
    "cert without its key": (["--tls-cert", "{cert}"], "CERT_FILE_INVALID"),
    "a file that is not PEM": (["--tls-cert", "{junk}", "--tls-key", "{key}"], "CERT_FILE_INVALID"),
    "a truncated certificate": (["--tls-cert", "{short}", "--tls-key", "{key}"], "CERT_FILE_INVALID"),
    "a key of another certificate": (
        ["--tls-cert", "{cert}", "--tls-key", "{other_key}"],
        "CERT_FILE_INVALID",
    ),
    "a certificate file that is not there": (
        ["--tls-cert", "{missing}", "--tls-key", "{key}"],
        "CERT_FILE_INVALID",
    ),
    "a key file that is not PEM": (["--tls-cert", "{cert}", "--tls-key", "{junk}"], "CERT_FILE_INVALID"),
    "a key without a certificate": (["--tls-key", "{key}"], "CERT_FILE_INVALID"),
    "a data folder that is a file": (["--data-dir", "{file}"], "DATA_DIR_UNUSABLE"),
    "a public URL without a scheme": (["--public-url", "mdm.acme.example"], "INVALID_INPUT"),
}


class TestServe:
    @pytest.mark.parametrize("case", list(SERVE_FAILURES))
    def test_a_start_up_failure_is_one_line_before_serving(
        self, tmp_path: Path, files: dict[str, Path], case: str
    ) -> None:
        """serve refuses a bad TLS file, data folder or public URL in one line with its code, exit 2,
        before it says it is serving."""
        args, reason = SERVE_FAILURES[case]
        paths = {k: str(v) for k, v in files.items()} | {"missing": str(tmp_path / "missing.pem")}
        code, out = serve(tmp_path, *[a.format(**paths) for a in args])
        assert_one_line(code, out, reason)

    def test_certificate_errors_do_not_show_the_parser(self, tmp_path: Path, files: dict[str, Path]) -> None:
        """A truncated certificate is named as such, never with cryptography's ParseError internals."""
        code, out = serve(tmp_path, "--tls-cert", str(files["short"]), "--tls-key", str(files["key"]))
        assert "ParseError" not in out and "ShortData" not in out and "_ssl.c" not in out, out
        assert str(files["short"]) in out

    def test_a_port_in_use(self, tmp_path: Path, busy_port: int) -> None:
        """A port another process listens on is PORT_UNAVAILABLE, exit 2, before serving."""
        code, out = serve(tmp_path, "--port", str(busy_port))
        assert_one_line(code, out, "PORT_UNAVAILABLE")

    def test_an_unreachable_database(self, tmp_path: Path) -> None:
        """serve with a database nobody answers at is DATABASE_UNAVAILABLE, exit 2, its password hidden."""
        url = f"postgresql://pomona:hunter2@127.0.0.1:{free_port()}/pomona"
        code, out = serve(tmp_path, env={"POMONA_DATABASE_URL": url})
        assert_one_line(code, out, "DATABASE_UNAVAILABLE")
        assert "hunter2" not in out

    def test_debug_shows_the_traceback(self, tmp_path: Path, files: dict[str, Path]) -> None:
        """`pomona --debug serve` prints the traceback above the same one-line error."""
        code, out = serve(
            tmp_path, "--tls-cert", str(files["junk"]), "--tls-key", str(files["key"]), debug=True
        )
        assert code == 2 and "Traceback" in out and "[CERT_FILE_INVALID]" in out.splitlines()[-1], out

    def test_plain_http_public_url_is_warned_before_serving(self, tmp_path: Path) -> None:
        """serve --public-url http://mdm.acme.example starts, with a warning printed before the banner."""
        env = {**os.environ, "POMONA_DATA_DIR": str(tmp_path / "data")}
        env.pop("POMONA_DATABASE_URL", None)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "pomona", "serve", "--port", str(free_port())]
        proc = subprocess.Popen(
            [*cmd, "--public-url", "http://mdm.acme.example"], env=env, stderr=subprocess.PIPE, text=True
        )
        seen: list[str] = []
        watchdog = threading.Timer(30, proc.kill)  # a server that never says it serves ends the loop
        watchdog.start()
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                seen.append(line)
                if "serving on" in line:
                    break
        finally:
            watchdog.cancel()
            proc.terminate()
            proc.wait(10)
        text = "".join(seen)
        assert "serving on" in seen[-1], text
        assert any(x.startswith("Warning") and "http://mdm.acme.example" in x for x in seen[:-1]), text

    def test_good_files_pass_the_checks(self, files: dict[str, Path]) -> None:
        """A matching certificate and key pass, as one file or two."""
        from pomona.pki.tls import check_server_tls

        check_server_tls(files["cert"], files["key"])
        both = files["cert"].parent / "both.pem"
        both.write_bytes(files["cert"].read_bytes() + files["key"].read_bytes())
        check_server_tls(both, None)


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


class TestCommands:
    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("postgresql://pomona@127.0.0.1:{port}/pomona", "DATABASE_UNAVAILABLE"),
            ("not a url", "DATABASE_UNAVAILABLE"),
            ("nosuchdriver://x/y", "DATABASE_UNAVAILABLE"),
        ],
    )
    def test_a_bad_database_url(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, reason: str
    ) -> None:
        """A command with a malformed or unreachable POMONA_DATABASE_URL says so in one line, exit 2."""
        monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("POMONA_DATABASE_URL", url.format(port=free_port()))
        code, out = cli("tenant", "list")
        assert_one_line(code, out, reason)

    def test_an_unusable_data_folder(self, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
        """A command whose data folder is a file says DATA_DIR_UNUSABLE in one line, exit 2."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        code, out = cli("tenant", "list", "--data-dir", str(files["file"] / "sub"))
        assert_one_line(code, out, "DATA_DIR_UNUSABLE")

    def test_a_bad_signing_identity(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, Path]
    ) -> None:
        """A truncated POMONA_SIGNING_IDENTITY is CERT_FILE_INVALID, without cryptography's internals."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("POMONA_SIGNING_IDENTITY", str(files["short"]))
        code, out = cli("tenant", "list")
        assert_one_line(code, out, "CERT_FILE_INVALID")
        assert "ParseError" not in out

    def test_a_command_outside_common_gives_no_traceback(self, files: dict[str, Path]) -> None:
        """`pomona demo` on a data folder that is a file fails in one line, with no traceback."""
        code, out = cli(
            "demo", "--data-dir", str(files["file"]), "--exit-after-setup", "--port", str(free_port())
        )
        lines = [x for x in out.splitlines() if x.strip()]
        assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("Error ["), out
        assert "Traceback" not in out

    def test_invalid_settings(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A setting of the environment that does not validate is one line with INVALID_INPUT, exit 2."""
        monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("POMONA_SECRET_KEY", "not base64!")
        code, out = cli("tenant", "list")
        assert_one_line(code, out, "INVALID_INPUT")
        assert "POMONA_SECRET_KEY" in out

    def test_debug_shows_the_traceback(self, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
        """With --debug the same failure prints its traceback too."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        code, out = cli("--debug", "tenant", "list", "--data-dir", str(files["file"]))
        assert code == 2 and "Traceback" in out and "DataDirError" in out, out

    def test_the_line_is_in_chinese(self, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
        """In zh-CN the error line and the failure's title are Chinese."""
        from pomona.i18n import set_process_lang

        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        previous = set_process_lang("zh-CN")
        try:
            code, out = cli("tenant", "list", "--data-dir", str(files["file"]))
        finally:
            set_process_lang(previous)
        assert code == 2 and "错误 [DATA_DIR_UNUSABLE]：无法使用数据文件夹" in out, out


class TestCertificateMessages:
    @pytest.mark.parametrize(("cert", "key"), [("short", "key"), ("cert", "short_key"), ("junk", "key")])
    def test_apns_upload_never_shows_the_parser(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, Path], cert: str, key: str
    ) -> None:
        """A truncated or foreign push certificate or key is APNS_CERT_INVALID in one line, exit 2, without
        cryptography's internals (ParseError { kind: ShortData }, ASN.1 details)."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path / "data"))
        body = files["key"].read_text().splitlines()
        files["short_key"] = tmp_path / "short.key"
        files["short_key"].write_text("\n".join([body[0], body[1][:8], body[-1]]) + "\n")
        assert cli("tenant", "create", "acme", "--domain", "acme.example")[0] == 0
        code, out = cli(
            "apns", "upload", "--tenant", "acme", "--cert", str(files[cert]), "--key", str(files[key])
        )
        lines = [x for x in out.splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1 and "[APNS_CERT_INVALID]" in lines[0], out
        for internal in (
            "ParseError",
            "ShortData",
            "ASN.1",
            "cryptography.io",
            "MalformedFraming",
            "Traceback",
        ):
            assert internal not in out, out


class TestDocumented:
    def test_cli_doc_names_every_start_up_failure(self) -> None:
        """docs/cli.md's start-up table names each start-up failure's code, and its exit codes are the code's."""
        from pomona.domain import errors as E

        doc = (ROOT / "docs" / "cli.md").read_text("utf-8")
        for cls in (E.CertFileError, E.DatabaseUnavailableError, E.DataDirError, E.PortUnavailableError):
            assert f"| `{cls.reason.value}` |" in doc, cls
            assert cls.exit_code == 2
        assert E.WebhookDeliveryError.exit_code == 1 and "WEBHOOK_DELIVERY_FAILED" in doc
