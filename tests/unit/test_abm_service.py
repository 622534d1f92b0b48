"""AbmService over the in-memory database and the ABM emulator in-process: progress, sync_all, waiting out
THROTTLED during a sync, and the token's expiry checked before Apple is asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pomona.domain.errors import AbmTokenExpiredError
from pomona.net.abm import HttpAbmConnector
from pomona.pki.abm import LocalAbmKeys
from pomona.pki.adapters import LocalPki
from pomona.services.abm import AbmService, SyncProgress
from pomona.services.admin import AdminService
from pomona.testing import FrozenClock, MemoryDatabase
from pomona.testing.abm_emulator import AbmEmulator

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def wired(devices: int = 2500) -> tuple[AbmService, AbmEmulator, FrozenClock, list[float]]:
    """A tenant with an uploaded token, its service over memory, the emulator, and the waits made."""
    db, clock = MemoryDatabase(), FrozenClock(START)
    emu = AbmEmulator(devices=devices, clock=clock.now)
    sleeps: list[float] = []
    abm = AbmService(
        db,
        clock,
        LocalAbmKeys(),
        HttpAbmConnector("http://abm.test", transport=emu.transport(), sleep=sleeps.append),
    )
    AdminService(db, clock, LocalPki()).create_tenant("acme", "acme.example", key_type="p256")
    cert, _ = abm.keypair("acme")
    abm.upload_token("acme", emu.issue_token(cert, expires_in=timedelta(days=100)))
    return abm, emu, clock, sleeps


class TestAbmService:
    def test_progress_reports_each_page(self) -> None:
        """The progress callback sees each page of the full fetch, then the cursor's sync, counts rising."""
        abm, _, _, _ = wired()
        seen: list[SyncProgress] = []
        (r,) = abm.sync("acme", progress=seen.append)
        assert [(p.phase, p.fetched, p.more) for p in seen] == [
            ("full", 1000, True),
            ("full", 2000, True),
            ("full", 2500, False),
            ("sync", 2500, False),
        ]
        assert (r.pages, r.added) == (3, 2500) and abm.device_count("acme") == 2500

    def test_sync_all_syncs_every_token_and_survives_failures(self) -> None:
        """The schedule's round syncs every token; one failing is recorded, not raised."""
        abm, emu, _, _ = wired(10)
        assert abm.sync_all() == 1
        emu.set_fault("terms-not-accepted")
        assert abm.sync_all() == 0
        (st,) = abm.tokens("acme")
        assert st.info.last_error == "DEP_TERMS_NOT_ACCEPTED"

    def test_throttled_sync_waits_and_completes(self) -> None:
        """THROTTLED in the middle of a sync: the client waits retry_after_seconds, the sync completes."""
        abm, emu, _, sleeps = wired(10)
        emu.throttle_after_s = 3
        emu.set_fault("throttled")
        (r,) = abm.sync("acme")
        assert r.added == 10 and sleeps == [3.0]

    def test_expired_token_is_not_sent_to_apple(self) -> None:
        """A token past its expiry fails the sync with DEP_TOKEN_EXPIRED before any call to ABM."""
        abm, emu, clock, _ = wired(10)
        clock.advance(timedelta(days=101))
        calls = len(emu.calls)
        with pytest.raises(AbmTokenExpiredError):
            abm.sync("acme")
        assert len(emu.calls) == calls
        (st,) = abm.tokens("acme")
        assert (st.state, st.info.last_error) == ("expired", "DEP_TOKEN_EXPIRED")
