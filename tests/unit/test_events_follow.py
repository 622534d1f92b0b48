"""`pomona events --follow`: each event once, in id order per poll, late commits of lower ids included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pomona.cli import events_cmds
from pomona.cli.events_cmds import follow_events, short_detail
from pomona.domain.models import Event, Outcome, Step

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def event(i: int) -> Event:
    return Event(tenant_id="t", at=NOW, step=Step.ADMIN, outcome=Outcome.OK, id=i)


class TestFollow:
    def test_late_commit_of_a_lower_id_is_shown_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An id committed after a higher one was read (PostgreSQL) is still shown, and nothing twice."""
        monkeypatch.setattr(events_cmds, "POLL_SECONDS", 0.0)
        visible_by_poll = [[10, 12], [10, 11, 12, 13], [10, 11, 12, 13], [10, 11, 12, 13, 14]]
        polls = iter(range(len(visible_by_poll) + 1))
        current: list[int] = []
        shown: list[int] = []

        def newest() -> int:
            n = next(polls)
            if n == len(visible_by_poll):
                raise KeyboardInterrupt
            current[:] = visible_by_poll[n]
            return max(current)

        def fetch(after: int) -> list[Event]:
            return [event(i) for i in current if i > after]

        with pytest.raises(KeyboardInterrupt):
            follow_events(fetch, newest, lambda e: shown.append(e.id or 0), floor=9)
        assert shown == [10, 12, 11, 13, 14]

    def test_pages_past_a_burst(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """More new events than a page in one poll are all shown, in order."""
        monkeypatch.setattr(events_cmds, "POLL_SECONDS", 0.0)
        monkeypatch.setattr(events_cmds, "PAGE", 3)
        ids = list(range(1, 11))
        calls = iter([10])
        shown: list[int] = []

        def newest() -> int:
            try:
                return next(calls)
            except StopIteration:
                raise KeyboardInterrupt from None

        def fetch(after: int) -> list[Event]:
            return [event(i) for i in ids if i > after][:3]

        with pytest.raises(KeyboardInterrupt):
            follow_events(fetch, newest, lambda e: shown.append(e.id or 0), floor=0)
        assert shown == ids


class TestShortDetail:
    def test_action_first_and_cut(self) -> None:
        """The action comes first, values are JSON (false, not False), and a long detail is cut with …."""
        assert short_detail({"enabled": False, "action": "user.update"}) == "user.update enabled=false"
        long = short_detail({"error": "x" * 100})
        assert len(long) == events_cmds.DETAIL_CHARS and long.endswith("…")
