"""Health's ABM token checks (domain/checks.py abm_token_findings): expiry steps and failing syncs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pomona.domain.checks import AbmTokenState, Severity, abm_token_findings
from pomona.domain.reasons import ReasonCode as R

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class TestAbmTokenFindings:
    def test_valid_token_is_quiet(self) -> None:
        """A token valid for more than 30 days, whose last sync succeeded, raises nothing."""
        assert abm_token_findings([AbmTokenState("main", NOW + 200 * DAY)], NOW) == []

    def test_warned_at_30_days_critical_at_7_and_expired(self) -> None:
        """DEP_TOKEN_EXPIRED: a warning from 30 days ahead, critical within 7, and once expired."""
        (w,) = abm_token_findings([AbmTokenState("main", NOW + 25 * DAY)], NOW)
        (c,) = abm_token_findings([AbmTokenState("main", NOW + 3 * DAY)], NOW)
        (x,) = abm_token_findings([AbmTokenState("main", NOW - DAY)], NOW)
        assert (w.code, w.severity, w.subject) == (
            R.DEP_TOKEN_EXPIRED,
            Severity.WARNING,
            "abm:main:expiry:30d",
        )
        assert (c.code, c.severity, c.facts["token"]) == (R.DEP_TOKEN_EXPIRED, Severity.CRITICAL, "main")
        assert (x.code, x.severity, x.subject) == (R.DEP_TOKEN_EXPIRED, Severity.CRITICAL, "abm:main")

    def test_failing_sync_is_a_finding_but_a_healed_cursor_is_not(self) -> None:
        """A sync that failed with T_C_NOT_SIGNED stays a finding per token; an expired cursor healed
        itself (a full fetch) and is not one."""
        tokens = [
            AbmTokenState("a", NOW + 200 * DAY, "DEP_TERMS_NOT_ACCEPTED", NOW - DAY),
            AbmTokenState("b", NOW + 200 * DAY, "DEP_CURSOR_EXPIRED", NOW - DAY),
        ]
        (f,) = abm_token_findings(tokens, NOW)
        assert (f.code, f.subject, f.facts["since"]) == (
            R.DEP_TERMS_NOT_ACCEPTED,
            "abm:a:sync",
            (NOW - DAY).isoformat(),
        )
