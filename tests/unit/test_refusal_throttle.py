"""The refusal throttle: unidentified callers' refusals are counted past a burst, identified ones never."""

from __future__ import annotations

from pomona.domain.models import Step
from pomona.domain.reasons import ReasonCode
from pomona.services.base import ServiceBase
from pomona.services.context import bind_caller, mark_identified, reset_caller
from pomona.services.throttle import BURST, MAX_DETAIL_CHARS, WINDOW
from pomona.testing import FrozenClock, MemoryDatabase


def failures(db: MemoryDatabase) -> list[object]:
    with db.unit_of_work(readonly=True) as uow:
        return uow.events.query("t1", limit=100_000)  # type: ignore[return-value]


class TestRefusalThrottle:
    def test_a_thousand_refusals_from_one_source_are_summarised(self) -> None:
        """1000 refusals from one address: BURST rows, then one EVENTS_SUPPRESSED event counting the rest
        once the window has passed."""
        db, clock = MemoryDatabase(), FrozenClock()
        svc = ServiceBase(db, clock)
        token = bind_caller("203.0.113.9")
        try:
            for _ in range(1000):
                svc.record_failure("t1", Step.SCEP, ReasonCode.MALFORMED_REQUEST, detail={"error": "x"})
            assert len(failures(db)) == BURST
            clock.advance(WINDOW)
            svc.record_failure("t1", Step.SCEP, ReasonCode.MALFORMED_REQUEST)
        finally:
            reset_caller(token)
        events = failures(db)
        summary = [e for e in events if e.reason == ReasonCode.EVENTS_SUPPRESSED]  # type: ignore[attr-defined]
        assert len(summary) == 1
        d = summary[0].detail  # type: ignore[attr-defined]
        assert (d["count"], d["source"], d["suppressed_reason"]) == (
            1000 - BURST,
            "203.0.113.9",
            "MALFORMED_REQUEST",
        )
        assert len(events) <= BURST + 2

    def test_sources_have_their_own_buckets(self) -> None:
        """Another address is not held back by the first one's flood."""
        db, clock = MemoryDatabase(), FrozenClock()
        svc = ServiceBase(db, clock)
        for address in ("198.51.100.1", "198.51.100.2"):
            token = bind_caller(address)
            try:
                for _ in range(BURST * 3):
                    svc.record_failure("t1", Step.SCEP, ReasonCode.MALFORMED_REQUEST)
            finally:
                reset_caller(token)
        assert len(failures(db)) == 2 * BURST

    def test_identified_callers_are_never_throttled(self) -> None:
        """A caller that proved an identity leaves an event for every refusal."""
        db, clock = MemoryDatabase(), FrozenClock()
        svc = ServiceBase(db, clock)
        token = bind_caller("203.0.113.9")
        try:
            mark_identified()
            for _ in range(BURST * 5):
                svc.record_failure("t1", Step.AUTHENTICATE, ReasonCode.DEVICE_BLOCKED)
        finally:
            reset_caller(token)
        assert len(failures(db)) == BURST * 5

    def test_strings_from_the_request_are_capped(self) -> None:
        """A long string in a refusal's detail (a SCEP messageType, a user agent) is cut to its cap."""
        db, clock = MemoryDatabase(), FrozenClock()
        svc = ServiceBase(db, clock)
        svc.record_failure(
            "t1",
            Step.SCEP,
            ReasonCode.MALFORMED_REQUEST,
            udid="U" * 5000,
            detail={"error": "unknown messageType " + "9" * 1_000_000, "nested": {"k": ["v" * 10_000]}},
        )
        (event,) = failures(db)
        assert len(event.detail["error"]) <= MAX_DETAIL_CHARS + 3  # type: ignore[attr-defined]
        assert len(event.detail["nested"]["k"][0]) <= MAX_DETAIL_CHARS + 3  # type: ignore[attr-defined]
        assert len(event.udid) == 64  # type: ignore[attr-defined]
