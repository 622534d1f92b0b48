"""History retention's rules (services/retention.py): the shortest retention, and the settings that set it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pomona.domain.errors import InvalidInputError
from pomona.services.diagnose.context import WINDOW
from pomona.services.retention import MIN_DAYS, Retention, check_days
from pomona.settings import Settings


class TestShortestRetention:
    def test_diagnosis_still_finds_its_week(self) -> None:
        """The shortest retention keeps every event diagnosis reads back from now."""
        assert timedelta(days=MIN_DAYS) >= WINDOW

    @pytest.mark.parametrize("days", [0, MIN_DAYS, 365])
    def test_zero_or_a_week_or_more(self, days: int) -> None:
        """0 (keep forever) and any number of days from the minimum up are accepted."""
        assert check_days(days, "--event-days") == days

    @pytest.mark.parametrize("days", [-1, 1, MIN_DAYS - 1])
    def test_less_is_refused_naming_what(self, days: int) -> None:
        """Fewer days is INVALID_INPUT naming the option or setting and the minimum."""
        with pytest.raises(InvalidInputError) as info:
            check_days(days, "--event-days")
        assert "--event-days" in info.value.detail and str(MIN_DAYS) in info.value.detail

    def test_settings_and_service_agree(self) -> None:
        """The settings refuse what the service refuses, and default to keeping everything."""
        assert not Retention().is_on()
        s = Settings()
        assert (s.event_retention_days, s.command_retention_days) == (0, 0)
        assert Settings(event_retention_days=MIN_DAYS).event_retention_days == MIN_DAYS
        with pytest.raises(ValueError, match=f"at least {MIN_DAYS} days"):
            Settings(command_retention_days=MIN_DAYS - 1)
