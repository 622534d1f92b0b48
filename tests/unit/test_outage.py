"""services/outage.py: a background loop's view of a database that does not answer: one warning line
when the outage starts, a wait doubling from 0.5 s to 30 s, reminders at most every ``remind_every``
seconds, one info line when the database answers again."""

from __future__ import annotations

import logging

import pytest

from pomona.domain.errors import StorageUnavailableError
from pomona.services.outage import Outage

AWAY = StorageUnavailableError('connection failed: FATAL:  database "pomona" does not exist')


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pomona.test"]


def test_the_wait_doubles_to_its_cap_and_the_outage_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """Ten unanswered rounds: waits 0.5, 1, 2 ... capped at 30 s, and one warning line with the job and
    the cause, without a traceback."""
    caplog.set_level(logging.INFO, "pomona.test")
    outage = Outage("push worker", logging.getLogger("pomona.test"))
    waits = [outage.failed(AWAY) for _ in range(10)]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30] and outage.failures == 10
    ((level, text),) = _messages(caplog)
    assert level == "WARNING" and text.startswith("push worker: the database did not answer (connection")
    assert 'database "pomona" does not exist' in text and "up to 30s" in text
    assert all(r.exc_info is None for r in caplog.records)


def test_the_database_answering_again_is_said_once_and_ends_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first answered round writes one info line with the failed attempts; the next outage starts
    again at the first wait; answered rounds outside an outage write nothing."""
    caplog.set_level(logging.INFO, "pomona.test")
    outage = Outage("leases", logging.getLogger("pomona.test"), first=2.0, longest=8.0)
    outage.answered()
    assert [outage.failed(AWAY) for _ in range(3)] == [2.0, 4.0, 8.0]
    outage.answered()
    outage.answered()
    assert (outage.failures, outage.wait) == (0, 0.0)
    assert outage.failed(AWAY) == 2.0
    levels = [(level, text.split(" (")[0].split(",")[0]) for level, text in _messages(caplog)]
    assert levels == [
        ("WARNING", "leases: the database did not answer"),
        ("INFO", "leases: the database answers again"),
        ("WARNING", "leases: the database did not answer"),
    ]
    assert "3 failed attempts" in _messages(caplog)[1][1]


def test_a_long_outage_is_recalled_at_most_every_remind_every(caplog: pytest.LogCaptureFixture) -> None:
    """With reminders due at once (remind_every=0), each further round writes a reminder with the count;
    with the default (5 min), a quick succession of rounds writes none."""
    caplog.set_level(logging.INFO, "pomona.test")
    log = logging.getLogger("pomona.test")
    eager, default = Outage("probe", log, remind_every=0.0), Outage("health", log)
    for _ in range(3):
        eager.failed(AWAY)
        default.failed(AWAY)
    texts = [text for _, text in _messages(caplog)]
    probe = [t for t in texts if t.startswith("probe: ")]
    assert len(probe) == 3 and all("still does not answer" in t for t in probe[1:])
    assert "and 2 attempts" in probe[1] and "and 3 attempts" in probe[2]
    assert [t for t in texts if t.startswith("health: ")] == [texts[1]]  # the start, no reminder
