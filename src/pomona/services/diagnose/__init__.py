"""`pomona diagnose`: from a reported message and the live state, the cause that holds and its fix.

For each candidate cause (the reason codes the reported message maps to, or every checkable code when
no message is given) one checker looks at the live state and the event log and returns a verdict:

    proven     the live state (or the server's own refusal, still in force) shows this cause
    likely     the evidence points to it, but only the device can confirm it (device-only causes)
    ruled_out  the live state shows this cause does not hold (or no longer holds)
    unknown    the server cannot tell; the finding says what to ask the user

The answer comes from evidence about the attempt the report is about, before anything the message
could mean (ranking.py's module doc has the full order): a refusal recorded in the attempt proves its
code; the funnel rules out a cause whose step the attempt got past (knowledge/causes.yaml); the live
state of the user and device decides the rest; tenant faults not tied to the attempt are listed under
"also wrong in this tenant"; a device-side cause the message names is likely once the server side is
clean. When nothing is proven or likely, the answer is UNKNOWN: it lists what was checked and what to
ask. A cause is never called proven on a guess.

The package:
    service.py    DiagnoseService: reads the state and events once, runs the checkers, ranks
    context.py    what the checkers read (and the facts derived from it once per diagnosis)
    checkers/     one module per area, each ending with its table code -> checker (where to add one)
    ranking.py    which causes to check for a message, and the order of the answers
    funnel.py     the enrollment attempts the event log shows, the steps each reached, its refusals
    render.py     the stable JSON shape (docs/diagnose.md)

Tenant-level rules (push certificate expiry, DNS) are `pomona.domain.checks`', shared with health.
"""

from __future__ import annotations

from pomona.services.checks import DiscoverySettings
from pomona.services.diagnose.checkers import CHECKERS, Checker
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.funnel import Attempt, attempts, funnel
from pomona.services.diagnose.model import Assessment, Verdict
from pomona.services.diagnose.render import to_json
from pomona.services.diagnose.service import DiagnoseService, Diagnosis

DiagnoseSettings = DiscoverySettings  # the name the composition root and the tests know

__all__ = [
    "CHECKERS",
    "Assessment",
    "Attempt",
    "Checker",
    "Context",
    "DiagnoseService",
    "DiagnoseSettings",
    "Diagnosis",
    "DiscoverySettings",
    "Verdict",
    "attempts",
    "funnel",
    "to_json",
]
