"""Which causes to check for a reported message, and the order the answers come in.

Findings the evidence points to (proven or likely) come first: the causes the reported message names (in
the founding document's order) before the ones Pomona adds behind the same message, proven before likely;
then what the server cannot tell; then what is ruled out. When nothing is proven or likely, an UNKNOWN
assessment goes first: the answer is that the server cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pomona.domain.reasons import ReasonCode as R
from pomona.knowledge import MessageMatch
from pomona.services.diagnose.model import Assessment, Verdict

# Checked only when a report names them: the expiry warning is health's business, and the well-known
# document matters for account-driven enrollment only.
ONLY_WHEN_REPORTED = frozenset({R.APNS_CERT_EXPIRING.value, R.WELL_KNOWN_DISCOVERY_FAILED.value})


def candidates(message: str | None, matches: Sequence[MessageMatch], checkable: Iterable[str]) -> list[str]:
    """The causes to check: those of the matched messages (the document's causes first, in its order,
    then what Pomona adds); none for a message nobody knows; every checkable one without a message."""
    if message and not matches:
        return []
    if matches:
        out: list[str] = []
        for m in matches:
            out += [c for c in m.codes if c not in out]
        for m in matches:
            out += [c for c in m.also if c not in out]
        return out
    return [c for c in checkable if c not in ONLY_WHEN_REPORTED]


def rank(assessments: list[Assessment], candidates: Sequence[str], matches: Sequence[MessageMatch]) -> None:
    """Sort in place: found first (named causes before added ones), then unknown, then ruled out."""
    order = {c: i for i, c in enumerate(candidates)}
    primary = {c for m in matches for c in m.codes} or set(candidates)

    def key(a: Assessment) -> tuple[int, int, int, int]:
        # A cause the message names (the document's list) outranks what Pomona adds behind the same
        # message (e.g. ENROLLMENT_ABANDONED, a symptom), as long as the evidence points to it.
        return (
            0 if a.verdict.found else a.verdict.rank,
            0 if a.code in primary else 1,
            a.verdict.rank,
            order.get(a.code, 999),
        )

    assessments.sort(key=key)


def answer_unknown(assessments: list[Assessment], base: dict[str, object]) -> None:
    """Put UNKNOWN first when nothing is proven or likely: a cause is never called proven on a guess."""
    if not any(a.verdict.found for a in assessments):
        assessments.insert(
            0,
            Assessment(
                R.UNKNOWN, Verdict.UNKNOWN, [], base, "no cause could be proven from the server's side"
            ),
        )
