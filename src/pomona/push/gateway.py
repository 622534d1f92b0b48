"""The push gateway the push service uses: one :class:`ApnsClient` per process, its identities read from
the tenant store (the tenants' push certificates, keys unsealed with the server key)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from pomona.domain.reasons import ReasonCode
from pomona.ports import PushCertStore, PushOutcome, PushReply, PushRequest, Transactions
from pomona.push.apns import ApnsClient, Push, PushIdentity

log = logging.getLogger("pomona.push")


class IdentityStores(Protocol):
    """What the identity source reads: the push credentials of a topic, and nothing else."""

    @property
    def push_certs(self) -> PushCertStore: ...


class TenantIdentitySource:
    """The client's IdentitySource over the tenant store: topic -> the tenant's certificate and key.

    Identities are cached; :meth:`forget` drops a topic's entry (the push service calls it when a
    tenant's certificate changes or APNs refuses it), so the next push reads the store again.
    """

    def __init__(self, db: Transactions[IdentityStores], unseal: Callable[[bytes, str], bytes]) -> None:
        self.db = db
        self.unseal = unseal
        self._cache: dict[str, PushIdentity | None] = {}
        self._lock = threading.Lock()

    def identity_for(self, topic: str) -> PushIdentity | None:
        with self._lock:
            if topic in self._cache:
                return self._cache[topic]
        found = self._load(topic)
        with self._lock:
            self._cache[topic] = found
        return found

    def _load(self, topic: str) -> PushIdentity | None:
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.push_certs.credentials(topic)
        if found is None:
            return None
        key = found.key
        if not key.lstrip().startswith(b"-----"):
            key = self.unseal(key, f"push-key:{found.tenant_id}")
        return PushIdentity.from_pem(found.cert_pem, key, topic)

    def forget(self, topic: str) -> None:
        with self._lock:
            self._cache.pop(topic, None)


class ApnsGateway:
    """:class:`pomona.ports.PushGateway` over the APNs client (push/apns.py)."""

    def __init__(self, client: ApnsClient, source: TenantIdentitySource) -> None:
        self.client = client
        self.source = source

    async def send(self, pushes: Sequence[PushRequest]) -> list[PushReply]:
        """Runs the client on its own loop thread (``send_sync``): the server's loop (uvloop under
        uvicorn) keeps serving devices, and the client never depends on which loop the server runs."""
        batch = [Push(p.token, p.push_magic, p.topic) for p in pushes]
        try:
            results = await asyncio.to_thread(self.client.send_sync, batch)
        except Exception as exc:  # noqa: BLE001 - a client failure is a transient outcome, retried later
            log.exception("APNs client failed")
            detail = f"{type(exc).__name__}: {exc}"[:300]
            return [
                PushReply(PushOutcome.TRANSIENT, ReasonCode.PUSH_UNREACHABLE.value, detail=detail)
                for _ in pushes
            ]
        return [
            PushReply(
                outcome=r.outcome,
                reason_code=None if r.reason_code is None else str(r.reason_code),
                status=r.status,
                reason=r.reason,
                detail=r.detail,
            )
            for r in results
        ]

    def forget(self, topic: str) -> None:
        self.source.forget(topic)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.client.close)
