"""The page a browser gets when an enrollment link is refused (``GET /enroll/<secret>``, http/root.py).

Who gets what: a browser asks for HTML (Safari does when the user opens the link on the phone) and gets
this page; iOS's profile installer, the MDM client, the virtual device and scripts do not ask for HTML
and get the device answer (``root.device_error``) as before. The status is the same for both: the error's
class decides it.

The page is in the language of the browser's Accept-Language (en, zh-CN) and says what stopped the
enrollment, what the user can do, and what the helpdesk needs: the reason code, the time, and the
request id (the response's ``x-request-id`` and the refusal's event carry the same id).

It says no more than the device answer does. Whoever holds a link sees the page, so it names neither the
tenant nor the link's account nor any id; of a refusal's facts it shows only those the device answer's
message names too (``Texts.facts``). The texts are the portal's where they fit (``portal.reason.*``);
``link.*`` where the portal's name what this page must not, or point at what it has not (a sign-in, the
device list).
"""

from __future__ import annotations

from dataclasses import dataclass

from pomona.domain.errors import ErrorResponse
from pomona.domain.reasons import ReasonCode
from pomona.http.portal import PLATFORM_NAMES, pick_lang, templates, translate
from pomona.ports import Clock
from pomona.presenters import display_name

PAGE_TYPE = "text/html; charset=utf-8"
# The link's secret is in the address: no referrer leaves the page, and nothing stores or frames it.
PAGE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"cache-control", b"no-store"),
    (b"vary", b"Accept, Accept-Language"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'",
    ),
]
MAX_ACCEPT = 1024  # browsers send a few hundred characters; past this nothing is read


def wants_page(accept: str | None) -> bool:
    """Whether the client asks for HTML (``text/html`` with a non-zero q), as browsers do; a device
    or a script (``*/*``, nothing, or a profile type) does not."""
    for part in (accept or "")[:MAX_ACCEPT].split(","):
        media, _, params = part.partition(";")
        if media.strip().lower() != "text/html":
            continue
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


@dataclass(frozen=True, slots=True)
class Texts:
    """The message keys of one refusal's page, and the facts of the refusal its texts name (only those the
    device answer's message names too)."""

    title: str
    explain: str
    facts: tuple[str, ...] = ()


def _link(name: str, title: str | None = None, facts: tuple[str, ...] = ()) -> Texts:
    """``link.<name>.explain``, with the portal's title for the code when it fits (``title``)."""
    return Texts(title or f"link.{name}.title", f"link.{name}.explain", facts)


# ENROLLMENT_TOKEN_INVALID covers three cases the user acts on differently (services/enrollment.py
# check_token says which: its context has ``revoked`` or ``used``, or neither for an unknown link).
TOKEN_TEXTS: dict[str, Texts] = {
    "unknown": _link("token_unknown"),
    "used": _link("token_used"),
    "revoked": _link("token_revoked"),
}
TEXTS: dict[ReasonCode, Texts] = {
    ReasonCode.ENROLLMENT_TOKEN_EXPIRED: _link("token_expired"),
    ReasonCode.MDM_AUTHORITY_NOT_SET: _link(
        "reason.MDM_AUTHORITY_NOT_SET", "portal.reason.MDM_AUTHORITY_NOT_SET.title"
    ),
    ReasonCode.APNS_CERT_MISSING: _link("reason.APNS_CERT_MISSING"),
    ReasonCode.APNS_CERT_EXPIRED: _link("reason.APNS_CERT_EXPIRED", "portal.reason.APNS_CERT_EXPIRED.title"),
    ReasonCode.USER_NOT_FOUND: _link("reason.USER_NOT_FOUND"),
    ReasonCode.USER_DISABLED: _link("reason.USER_DISABLED"),
    ReasonCode.USER_NOT_LICENSED: _link("reason.USER_NOT_LICENSED", "portal.reason.USER_NOT_LICENSED.title"),
    ReasonCode.LICENSES_EXHAUSTED: _link(
        "reason.LICENSES_EXHAUSTED", "portal.reason.LICENSES_EXHAUSTED.title"
    ),
    ReasonCode.PLATFORM_BLOCKED: Texts(
        "portal.reason.PLATFORM_BLOCKED.title",
        "portal.reason.PLATFORM_BLOCKED.explain",
        ("platform", "restriction"),
    ),
    ReasonCode.OS_VERSION_TOO_LOW: _link(
        "reason.OS_VERSION_TOO_LOW", "portal.reason.OS_VERSION_TOO_LOW.title", ("os_version", "minimum")
    ),
    ReasonCode.OS_VERSION_TOO_HIGH: _link(
        "reason.OS_VERSION_TOO_HIGH", "portal.reason.OS_VERSION_TOO_HIGH.title", ("os_version", "maximum")
    ),
    ReasonCode.DEVICE_LIMIT_REACHED: _link(
        "reason.DEVICE_LIMIT_REACHED", "portal.reason.DEVICE_LIMIT_REACHED.title", ("count", "limit")
    ),
}
GENERIC = Texts("portal.reason.generic.title", "portal.reason.generic.explain")
INTERNAL = _link("error.internal", "portal.error.internal.title")


def texts_for(e: ErrorResponse) -> Texts:
    """The texts of the page for ``e``: a fault of ours (5xx) says so; a refusal says its reason."""
    if e.status >= 500:
        return INTERNAL
    if e.reason is ReasonCode.ENROLLMENT_TOKEN_INVALID:
        case = "revoked" if e.context.get("revoked") else "used" if e.context.get("used") else "unknown"
        return TOKEN_TEXTS[case]
    return TEXTS.get(e.reason, GENERIC)


class LinkRefusalPage:
    """Renders the refusal page (templates/portal/link_refused.html, autoescaped, the portal's CSS)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.template = templates().get_template("link_refused.html")

    def render(self, e: ErrorResponse, request_id: str, accept_language: str | None) -> bytes:
        lang = pick_lang(None, accept_language)
        texts = texts_for(e)
        facts = {k: e.context[k] for k in texts.facts if k in e.context}
        if "platform" in facts:
            facts["platform"] = PLATFORM_NAMES.get(str(facts["platform"]), facts["platform"])
        if isinstance(facts.get("restriction"), str):  # a built-in restriction in the reader's language
            facts["restriction"] = display_name(str(facts["restriction"]), lang)

        def _(key: str, **values: object) -> str:
            return translate(lang, key, **values)

        html = self.template.render(
            _=_,
            lang=lang,
            tenant=None,
            csrf=None,
            title=_(texts.title, **facts),
            explain=_(texts.explain, **facts),
            reason=e.reason.value,
            request_id=request_id,
            at=self.clock.now(),
        )
        return html.encode("utf-8")
