"""Every checker, one module per area; each module ends with its table, code -> checker.

To add a diagnose check: write the checker in its area's module and add it to that module's table (and
the code's text to the knowledge base). The order below is the order candidates are checked in when no
message is reported, and breaks ties in the ranking.
"""

from __future__ import annotations

from pomona.services.diagnose.checkers import ade, directory, discovery, enrollment, events, policy, tenant
from pomona.services.diagnose.checkers.base import Checker

CHECKERS: dict[str, Checker] = {
    **tenant.CHECKERS,
    **directory.CHECKERS,
    **policy.CHECKERS,
    **enrollment.CHECKERS,
    **discovery.CHECKERS,
    **events.CHECKERS,
    **ade.CHECKERS,
}

__all__ = ["CHECKERS", "Checker"]
