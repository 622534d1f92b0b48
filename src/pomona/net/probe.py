"""The public URL as a device sees it (ports.UrlProber): TLS verified against the system's trust store
(or a given CA file) with the URL's host name, then ``GET /healthz``, keeping the server's ``Date``.

OpenSSL's verify code names the problem (https://docs.openssl.org/master/man1/openssl-verification-options/):
18/19 a self-signed certificate (alone or in the chain), 10 expired, 62/64 another host name or IP
address, anything else an issuer that is not trusted. A certificate that fails is fetched again without
verification, to read its expiry and the server's ``Date`` (the clock check needs it either way).
"""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from pomona.domain.checks import TlsProblem, UrlProbe

_PROBLEMS: dict[int, TlsProblem] = {18: "self_signed", 19: "self_signed", 10: "expired", 62: "name_mismatch"}
_PROBLEMS[64] = "name_mismatch"


class TlsUrlProber:
    def __init__(self, *, ca_file: Path | None = None, timeout: float = 5.0) -> None:
        self.ca_file = ca_file
        self.timeout = timeout

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=None if self.ca_file is None else str(self.ca_file))

    def _peer_cert(self, host: str, port: int, verify: bool) -> x509.Certificate | None:
        ctx = self._context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=self.timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        return None if der is None else x509.load_der_x509_certificate(der)

    def probe(self, url: str) -> UrlProbe:
        parts = urlsplit(url)
        host = parts.hostname or ""
        problem: TlsProblem | None = None
        detail: str | None = None
        not_after: datetime | None = None
        try:
            if parts.scheme == "https":
                port = parts.port or 443
                try:
                    cert = self._peer_cert(host, port, verify=True)
                except ssl.SSLCertVerificationError as exc:
                    problem = _PROBLEMS.get(exc.verify_code, "untrusted")
                    detail = exc.verify_message
                    cert = self._peer_cert(host, port, verify=False)
                not_after = None if cert is None else cert.not_valid_after_utc
            verify: ssl.SSLContext | bool = self._context() if problem is None else False
            r = httpx.get(f"{url.rstrip('/')}/healthz", timeout=self.timeout, verify=verify)
        except (OSError, ssl.SSLError, httpx.HTTPError) as exc:
            return UrlProbe(url, reached=False, error=f"{type(exc).__name__}: {exc}"[:300])
        date = r.headers.get("date")
        server_date = None
        if date:
            try:
                server_date = parsedate_to_datetime(date).astimezone(UTC)
            except (TypeError, ValueError):
                server_date = None
        return UrlProbe(url, True, None, problem, detail, not_after, r.status_code, server_date)
