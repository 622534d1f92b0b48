"""Certificate authentication as a middleware (NanoMDM's ``certauth.New(next, store)``).

Every device message carries an ``Mdm-Signature`` header: a detached CMS signature over the body. CertAuth
lets a message through to the next handler only if that signature verifies, the signer was issued by this
tenant's CA, and the signer is valid now (five minutes of clock skew allowed); the next handler gets the
request with its :class:`~pomona.services.checkin.handler.Identity`. Which enrollment the identity is bound
to is the core's check, made in the same read that finds the enrollment (one read on the hot path).

"Issued by this CA" costs a signature verification; its positive answers are cached per process (an
issued certificate never changes issuer), and the loaded CA certificates too. Verifying needs the CA's
certificate only: this path never reads, loads or caches the CA's private key.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta

from cryptography.hazmat.primitives import hashes

from pomona.domain.errors import CertNotTrustedError, SignatureInvalidError
from pomona.domain.models import Tenant
from pomona.ports import CaCertificate, Clock, Pki
from pomona.protocol import cms
from pomona.services.checkin.handler import CheckinHandler, Identity, M, Middleware, Request
from pomona.services.context import mark_identified

CLOCK_SKEW = timedelta(minutes=5)


class Lru:
    """A small thread-safe LRU map (the process-wide caches of the check-in path)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[object, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: object) -> object | None:
        with self.lock:
            v = self.data.get(key)
            if v is not None:
                self.data.move_to_end(key)
            return v

    def put(self, key: object, value: object) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)

    def drop(self, key: object) -> None:
        with self.lock:
            self.data.pop(key, None)


def verify_signature(body: bytes, signature: str | None) -> Identity:
    """The signer of ``body`` by its ``Mdm-Signature`` header, or SignatureInvalidError."""
    if not signature:
        raise SignatureInvalidError("no Mdm-Signature header")
    try:
        cert = cms.verify_detached(base64.b64decode(signature, validate=False), body)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalidError(f"Mdm-Signature does not verify: {exc}") from exc
    return Identity(cert, cert.fingerprint(hashes.SHA256()).hex())


class CertAuth(Middleware):
    def __init__(self, next: CheckinHandler, pki: Pki, clock: Clock) -> None:
        super().__init__(next)
        self.pki = pki
        self.clock = clock
        self._cas: dict[str, CaCertificate] = {}
        self._issued_by = Lru(200_000)

    def around(self, req: Request, msg: M, call: Callable[[Request, M], bytes]) -> bytes:
        return call(self.authenticated(req), msg)

    def authenticated(self, req: Request) -> Request:
        """The request with its verified signer, or the refusal (SIGNATURE_INVALID, CERT_NOT_TRUSTED)."""
        identity = verify_signature(req.body, req.signature)
        key = (req.tenant.id, identity.fingerprint)
        if self._issued_by.get(key) is None:
            if not self._ca(req.tenant).is_issuer_of(identity.cert):
                raise CertNotTrustedError(
                    "the signing certificate was not issued by this tenant's CA",
                    fingerprint=identity.fingerprint,
                )
            self._issued_by.put(key, True)
        mark_identified()  # a certificate of this tenant's CA: its refusals are never rate-limited
        now = self.clock.now()
        cert = identity.cert
        if cert.not_valid_after_utc <= now or cert.not_valid_before_utc > now + CLOCK_SKEW:
            raise CertNotTrustedError(
                "the signing certificate is expired or not yet valid", fingerprint=identity.fingerprint
            )
        return Request(req.tenant, req.body, req.signature, identity)

    def _ca(self, tenant: Tenant) -> CaCertificate:
        ca = self._cas.get(tenant.id)
        if ca is None:
            ca = self._cas[tenant.id] = self.pki.load_ca_certificate(tenant.ca_cert_pem)
        return ca
