"""An OpenID Connect provider for tests, over real HTTP on 127.0.0.1: discovery, authorize (approves the
configured user at once: a 302 back with the code and state), token (client secret basic, PKCE S256
checked), and the JWKS. ID tokens are RS256, signed with an RSA key made here (``cryptography``).

Faults for tests: ``nonce`` (another nonce than the request's), ``audience`` (another aud),
``exp_offset`` (seconds from now; negative: an expired token), ``issuer`` (another iss in the token),
``sign_key`` (sign with a key the JWKS does not have).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class RsaKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, str]:
        pub = self.key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": _int(pub.n),
            "e": _int(pub.e),
        }

    def sign(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        body = _b64(json.dumps(claims).encode())
        sig = self.key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{body}.{_b64(sig)}"

    def pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


class OidcEmulator:
    """One identity provider; ``user`` is the email it approves. Stop it with :meth:`stop`."""

    def __init__(
        self,
        client_id: str = "pomona-console",
        client_secret: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.now = now  # the server's clock, for tokens it must find fresh (or expired)
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(16)
        self.key = RsaKey(f"k-{secrets.token_hex(4)}")
        self.sign_key: RsaKey | None = None  # a key the JWKS does not list
        self.user = ""
        self.extra: dict[str, Any] = {}
        self.nonce: str | None = None
        self.audience: str | None = None
        self.issuer_claim: str | None = None
        self.exp_offset = 300
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the base class's name
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    return self._json(200, provider.discovery())
                if url.path == "/jwks":
                    return self._json(200, {"keys": [provider.key.jwk()]})
                if url.path == "/authorize":
                    if q.get("client_id") != provider.client_id or q.get("response_type") != "code":
                        return self._json(400, {"error": "invalid_request"})
                    if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                        return self._json(400, {"error": "invalid_request", "error_description": "PKCE"})
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = q
                    loc = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
                    self.send_response(302)
                    self.send_header("Location", loc)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802 - the base class's name
                if urlsplit(self.path).path != "/token":
                    return self._json(404, {"error": "not_found"})
                provider.token_requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                basic = base64.b64encode(f"{provider.client_id}:{provider.client_secret}".encode()).decode()
                if self.headers.get("Authorization", "") != f"Basic {basic}":
                    return self._json(401, {"error": "invalid_client"})
                req = provider.codes.pop(form.get("code", ""), None)
                if req is None or form.get("redirect_uri") != req["redirect_uri"]:
                    return self._json(400, {"error": "invalid_grant"})
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                if _b64(digest) != req.get("code_challenge"):
                    return self._json(400, {"error": "invalid_grant", "error_description": "PKCE"})
                now = int(provider.now())
                claims = {
                    "iss": provider.issuer_claim or provider.issuer,
                    "aud": provider.audience or provider.client_id,
                    "sub": "sub-" + hashlib.sha256(provider.user.encode()).hexdigest()[:12],
                    "email": provider.user,
                    "email_verified": True,
                    "iat": now,
                    "exp": now + provider.exp_offset,
                    "nonce": provider.nonce or req.get("nonce"),
                    **provider.extra,
                }
                token = (provider.sign_key or provider.key).sign(claims)
                return self._json(200, {"access_token": "at", "token_type": "Bearer", "id_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    def reset_faults(self) -> None:
        self.nonce = self.audience = self.issuer_claim = None
        self.sign_key = None
        self.exp_offset = 300
        self.extra = {}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["OidcEmulator", "RsaKey"]
