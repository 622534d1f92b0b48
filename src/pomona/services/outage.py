"""How a background loop lives through a database that does not answer.

The storage layer raises :class:`~pomona.domain.errors.StorageUnavailableError` when the database is
down, dropped, unreachable or refusing logins (storage/database.py). A background loop (the push
worker, the lease renewals, the scheduled jobs; services/push.py, services/jobs.py) keeps one
:class:`Outage` and tells it how each round went:

- the first round the database does not answer writes ONE warning line naming the job and the cause
  (the driver's first line; no traceback: this is no bug of ours), and the loop waits ``first`` seconds;
- each further unanswered round doubles the wait, up to ``longest`` (0.5 s, 1 s, 2 s ... 30 s), and
  writes nothing, except one reminder line every ``remind_every`` seconds while the outage lasts;
- the first round that goes through again writes one info line (how long, how many attempts).

Anything else a round raises is a bug and is still logged with its traceback, by the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from pomona.domain.errors import StorageUnavailableError
from pomona.domain.reasons import ReasonCode

__all__ = ["FIRST_WAIT", "LONGEST_WAIT", "REMIND_EVERY", "Outage"]

#: Seconds a loop waits after the first round the database did not answer; the wait doubles each round
#: up to LONGEST_WAIT.
FIRST_WAIT: Final = 0.5
LONGEST_WAIT: Final = 30.0
#: While an outage lasts, one more warning line at most this often (seconds).
REMIND_EVERY: Final = 300.0


class Outage:
    """One background loop's view of the database: answering, or away since when and for how many
    rounds, and how long to wait before the next round (:attr:`wait`)."""

    def __init__(
        self,
        job: str,
        log: logging.Logger,
        *,
        first: float = FIRST_WAIT,
        longest: float = LONGEST_WAIT,
        remind_every: float = REMIND_EVERY,
    ) -> None:
        self.job = job
        self.log = log
        self.first = first
        self.longest = longest
        self.remind_every = remind_every
        #: Rounds in a row the database did not answer (0: it answers).
        self.failures = 0
        #: Seconds to wait before the next round (0 while the database answers).
        self.wait = 0.0
        self._since = 0.0  # monotonic time of the first unanswered round
        self._reminded = 0.0

    def failed(self, exc: StorageUnavailableError) -> float:
        """A round the database did not answer: the seconds to wait before the next one (logged once
        when the outage starts, then at most every ``remind_every`` seconds)."""
        now = time.monotonic()
        self.failures += 1
        extra = {"job": self.job, "reason": ReasonCode.DATABASE_UNAVAILABLE.value}
        if self.failures == 1:
            self.wait = self.first
            self._since = self._reminded = now
            self.log.warning(
                "%s: the database did not answer (%s); retrying with backoff up to %gs",
                self.job,
                exc,
                self.longest,
                extra=extra,
            )
            return self.wait
        self.wait = min(self.wait * 2, self.longest)
        if now - self._reminded >= self.remind_every:
            self._reminded = now
            self.log.warning(
                "%s: the database still does not answer after %.0fs and %d attempts (%s)",
                self.job,
                now - self._since,
                self.failures,
                exc,
                extra=extra,
            )
        return self.wait

    def answered(self) -> None:
        """A round went through: after an outage, one info line, and no more waiting."""
        if not self.failures:
            return
        self.log.info(
            "%s: the database answers again, after %.0fs and %d failed attempts",
            self.job,
            time.monotonic() - self._since,
            self.failures,
            extra={"job": self.job},
        )
        self.failures = 0
        self.wait = 0.0
