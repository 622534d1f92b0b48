"""The server's own TLS files, checked before `pomona serve` says it is serving.

uvicorn loads them only when it binds, after the banner, and reports OpenSSL's ``PEM lib (_ssl.c:…)``; and
cryptography's parse errors name its internals (``ParseError { kind: ShortData }``). Here each failure is
one :class:`CertFileError` naming the file and what is wrong with it in the operator's terms.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from pomona.domain.errors import CertFileError
from pomona.i18n import msg

_KEY_MARKER = b"PRIVATE KEY-----"


def read_pem_file(path: Path, what: str) -> bytes:
    """The file's bytes, or CERT_FILE_INVALID naming why it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertFileError(msg("error.file.missing", what=what, path=path), path=str(path)) from None
    except IsADirectoryError:
        raise CertFileError(msg("error.file.folder", what=what, path=path), path=str(path)) from None
    except PermissionError:
        raise CertFileError(msg("error.file.denied", what=what, path=path), path=str(path)) from None
    except OSError as exc:
        raise CertFileError(
            msg("error.file.unreadable", what=what, path=path, error=exc.strerror), path=str(path)
        ) from None


def check_certificate_pem(data: bytes, *, what: str, path: Path) -> None:
    """At least one PEM certificate, each of them parseable."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertFileError(msg("error.tls.no_cert", what=what, path=path), path=str(path))
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:  # cryptography's text names its parser's internals: not for the operator
        raise CertFileError(msg("error.tls.cert_damaged", what=what, path=path), path=str(path)) from None


def check_private_key_pem(data: bytes, *, what: str, path: Path) -> None:
    """One unencrypted PEM private key."""
    if _KEY_MARKER not in data:
        raise CertFileError(msg("error.tls.no_key", what=what, path=path), path=str(path))
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertFileError(msg("error.tls.key_encrypted", what=what, path=path), path=str(path)) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertFileError(msg("error.tls.key_damaged", what=what, path=path), path=str(path)) from None


def check_server_tls(cert: Path | None, key: Path | None) -> None:
    """The certificate and key `pomona serve` was given load together, as the server will load them.

    The key may be in the certificate's file (as OpenSSL allows); a key without a certificate is refused."""
    if cert is None:
        if key is not None:
            raise CertFileError(msg("error.tls.key_alone"))
        return
    cert_pem = read_pem_file(cert, "--tls-cert")
    check_certificate_pem(cert_pem, what="--tls-cert", path=cert)
    if key is None:
        if _KEY_MARKER not in cert_pem:
            raise CertFileError(msg("error.tls.cert_without_key", cert=cert), path=str(cert))
        check_private_key_pem(cert_pem, what="--tls-cert", path=cert)
    else:
        check_private_key_pem(read_pem_file(key, "--tls-key"), what="--tls-key", path=key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), None if key is None else str(key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):  # OpenSSL: [X509: KEY_VALUES_MISMATCH]
            raise CertFileError(
                msg("error.tls.mismatch", key=key or cert, cert=cert),
                path=str(cert),
            ) from None
        raise CertFileError(
            msg("error.tls.openssl", cert=cert, reason=exc.reason or "unknown"),
            path=str(cert),
        ) from None
    except OSError as exc:
        raise CertFileError(
            msg("error.file.unreadable", what="--tls-cert", path=cert, error=exc.strerror), path=str(cert)
        ) from None
