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

    def test_no_successful_sync_for_two_intervals_is_stale(self) -> None:
        """DEP_SYNC_STALE: the last good sync (or the upload, never synced) is older than two intervals and
        no sync failed; a failed sync is reported by its own code instead, and no schedule means no check."""
        ten = timedelta(minutes=10)
        fresh = AbmTokenState("fresh", NOW + 200 * DAY, last_sync_at=NOW - 5 * timedelta(minutes=1))
        old = AbmTokenState("old", NOW + 200 * DAY, last_sync_at=NOW - 3 * ten)
        never = AbmTokenState("never", NOW + 200 * DAY, uploaded_at=NOW - DAY)
        failing = AbmTokenState("failing", NOW + 200 * DAY, "DEP_TERMS_NOT_ACCEPTED", NOW, NOW - DAY)
        found = abm_token_findings([fresh, old, never, failing], NOW, stale_after=ten)
        assert sorted((f.code.value, f.subject) for f in found) == [
            ("DEP_SYNC_STALE", "abm:never:stale"),
            ("DEP_SYNC_STALE", "abm:old:stale"),
            ("DEP_TERMS_NOT_ACCEPTED", "abm:failing:sync"),
        ]
        stale = next(f for f in found if f.subject == "abm:old:stale")
        assert stale.severity is Severity.WARNING and stale.facts["last_sync"] == (NOW - 3 * ten).isoformat()
        assert [f.code for f in abm_token_findings([old, never], NOW)] == []


class TestAdeMfaFindings:
    def test_legacy_profiles_with_mfa_users(self) -> None:
        """DEP_MFA_WITH_LEGACY_AUTH per legacy-auth profile while the tenant has MFA users; none without."""
        from pomona.domain.checks import ade_mfa_findings

        profiles = [("staff", "legacy"), ("web", "modern"), ("kiosk", "none")]
        (f,) = ade_mfa_findings(profiles, 2)
        assert (f.code, f.severity, f.subject, f.facts["mfa_users"]) == (
            R.DEP_MFA_WITH_LEGACY_AUTH,
            Severity.WARNING,
            "abm:profile:staff",
            2,
        )
        assert ade_mfa_findings(profiles, 0) == []
