"""The checker contract: one function per candidate cause, reading the context, answering an assessment."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pomona.domain.reasons import ReasonCode
from pomona.services.diagnose.context import WINDOW, Context
from pomona.services.diagnose.model import Assessment, Verdict, ev, note

Checker = Callable[[Context], Assessment]


def table(codes: Iterable[ReasonCode], make: Callable[[ReasonCode], Checker]) -> dict[str, Checker]:
    """One checker per code, made by `make`, in the codes' order."""
    return {c.value: make(c) for c in codes}


def by_events(ctx: Context, code: str, *, device_only: bool = False) -> Assessment:
    """A cause only the server's own refusals can show (protocol, token, push codes)."""
    hits = ctx.refusals(code)
    if hits:
        return Assessment(
            code,
            Verdict.PROVEN,
            [ev(e) for e in hits[:5]],
            {"count": len(hits), "first": hits[-1].at.isoformat(), "last": hits[0].at.isoformat()},
            note("refused_times", count=len(hits), code=code),
        )
    return Assessment(
        code,
        Verdict.UNKNOWN if device_only else Verdict.RULED_OUT,
        [],
        {},
        note("no_refusal", code=code, days=WINDOW.days),
    )
