"""The ADE virtual device: Setup Assistant as an iPhone in Apple Business Manager runs it.

:func:`run_setup_assistant` takes a :class:`~pomona.testing.virtual_device.VirtualDevice` through
Automated Device Enrollment, step by step, and reports each step (``pomona simulate --ade``):

``activation``     ask Apple's activation service for the device's record (here the ABM emulator's
                   ``POST /_device/activation``, :mod:`pomona.testing.abm_emulator`): the assigned
                   profile, its ``url`` and ``configuration_web_url``
``signin``         modern authentication: open ``configuration_web_url`` with the header
                   ``x-apple-aspen-deviceinfo`` (base64 of the signed MachineInfo), sign in (``upn``,
                   ``password``, the page's ``csrf``), answer the TOTP page (``code``), until the answer
                   is the profile (``application/x-apple-aspen-config``)
``machineinfo``    otherwise: POST the signed MachineInfo to ``url``; a ``401`` Basic challenge is
                   answered with the user's credentials (legacy authentication)
``profile``        the profile answered is one iOS installs (content type, signature)
``scep``, ``authenticate``, ``tokenupdate``
                   install it: the identity over SCEP, then Authenticate and TokenUpdate (with
                   ``AwaitingConfiguration`` true when the record says ``await_device_configured``)
``release``        held at Setup Assistant: poll the command loop until ``DeviceConfigured`` arrives and
                   is acknowledged, within ``wait_release`` seconds

The first step that fails ends the run; its ``reason`` is the server's reason code where the server
gave one, else one of the device-side names:

- ``DEP_NETWORK_ERROR``: the activation service could not be reached (XPC_TYPE_ERROR Connection
  invalid); ``DEP_PROFILE_NOT_ASSIGNED``: the device has no profile; ``DEP_DEVICE_NOT_IN_ABM``: ABM does
  not list the serial (no activation record at all);
- ``OS_VERSION_TOO_LOW`` with ``software_update_required`` in the detail: Apple's 403
  ``com.apple.softwareupdate.required`` answer (the device would update first);
- ``CREDENTIALS_REQUIRED``: the server asks for the user's credentials and none were given;
  ``SIGNIN_REFUSED`` / ``MFA_REFUSED``: the web view's sign-in or TOTP page came back with an error (its
  message key in the detail); ``MFA_REQUIRED``: the user must pass MFA and no TOTP secret was given
  (a user still to enrol one is shown it by the page, and the device uses that one, reported as
  ``totp_secret_enrolled``); a refusal page's ``data-reason`` is reported as the reason;
- ``AWAITING_CONFIGURATION_STUCK``: no DeviceConfigured within ``wait_release`` seconds;
- ``HTTP_<status>`` for a refusal without a code, ``SERVER_MISBEHAVED:<step>``, ``NETWORK_ERROR`` and
  ``TIMEOUT`` as :func:`pomona.testing.fleet.classify_failure` names them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Final
from urllib.parse import urljoin

import httpx

from pomona.protocol import machineinfo as machineinfo_codec
from pomona.services.portal import totp_now
from pomona.testing.abm_emulator import ACTIVATION_PATH
from pomona.testing.device_ca import TestDeviceCa
from pomona.testing.fleet import classify_failure
from pomona.testing.virtual_device import (
    PROFILE_CONTENT_TYPE,
    EnrollmentRefused,
    ServerMisbehaved,
    VirtualDevice,
    VirtualDeviceError,
)

__all__ = [
    "DEVICEINFO_HEADER",
    "AdeResult",
    "AdeStep",
    "ActivationRecord",
    "fetch_activation_record",
    "run_setup_assistant",
    "wait_for_release",
]

DEVICEINFO_HEADER: Final = "x-apple-aspen-deviceinfo"
#: Pages the web view follows (redirects and forms) before it gives up on a server that never ends.
MAX_WEB_PAGES: Final = 12
DEFAULT_WAIT_RELEASE: Final = 60.0
DEFAULT_POLL_INTERVAL: Final = 1.0


@dataclass(frozen=True)
class AdeStep:
    """One step of Setup Assistant: its name, whether it passed, the reason code when it did not."""

    name: str
    ok: bool
    reason: str | None = None
    detail: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason, "detail": self.detail}


@dataclass
class AdeResult:
    """What one device went through; ``ok`` when every step passed."""

    serial: str
    udid: str
    steps: list[AdeStep] = field(default_factory=list)
    enrolled: bool = False
    awaited: bool = False  # the profile holds the device at Setup Assistant (await_device_configured)
    released: bool | None = None  # None unless awaited

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def failed(self) -> AdeStep | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def reason(self) -> str | None:
        failed = self.failed
        return failed.reason if failed is not None else None

    def to_dict(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "udid": self.udid,
            "ok": self.ok,
            "reason": self.reason,
            "enrolled": self.enrolled,
            "awaited": self.awaited,
            "released": self.released,
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True)
class ActivationRecord:
    """The profile Apple's activation service hands a device in Setup Assistant (Apple's field names)."""

    profile: dict[str, object]

    @property
    def url(self) -> str:
        return str(self.profile.get("url") or "")

    @property
    def configuration_web_url(self) -> str:
        return str(self.profile.get("configuration_web_url") or "")

    @property
    def await_device_configured(self) -> bool:
        return bool(self.profile.get("await_device_configured"))

    def summary(self) -> dict[str, object]:
        keys = (
            "profile_name",
            "profile_uuid",
            "url",
            "configuration_web_url",
            "is_supervised",
            "is_mdm_removable",
            "await_device_configured",
        )
        return {k: self.profile[k] for k in keys if k in self.profile}


class _Failed(Exception):
    """A step failed: carries the step to record."""

    def __init__(self, step: AdeStep) -> None:
        super().__init__(f"{step.name}: {step.reason}")
        self.step = step


def _fail(name: str, reason: str, **detail: object) -> _Failed:
    return _Failed(AdeStep(name, False, reason, detail))


# --------------------------------------------------------------------------------------------------
# Activation record


def fetch_activation_record(client: httpx.Client, abm_url: str, serial: str) -> ActivationRecord:
    """Ask the activation service for ``serial``'s record; raises ``_Failed`` (step ``activation``)."""
    url = abm_url.rstrip("/") + ACTIVATION_PATH
    try:
        response = client.post(url, json={"serial_number": serial})
    except httpx.TransportError as exc:
        raise _fail(
            "activation",
            "DEP_NETWORK_ERROR",
            error="XPC_TYPE_ERROR Connection invalid",
            cause=f"{type(exc).__name__}: {exc}",
            url=url,
        ) from exc
    data: object = None
    try:
        data = response.json()
    except ValueError:
        pass
    if response.status_code == 404 and isinstance(data, dict):
        error = data.get("error")
        if error == "NOT_ASSIGNED":
            raise _fail("activation", "DEP_PROFILE_NOT_ASSIGNED", error=error, serial=serial)
        if error == "NOT_FOUND":
            raise _fail("activation", "DEP_DEVICE_NOT_IN_ABM", error=error, serial=serial)
    if response.status_code != 200 or not isinstance(data, dict):
        raise _fail("activation", f"HTTP_{response.status_code}", body=response.text[:200])
    return ActivationRecord(data)


# --------------------------------------------------------------------------------------------------
# Refusals the enrollment endpoint answers


def _refusal(step: str, response: httpx.Response, **detail: object) -> _Failed:
    """The reason of a refusal: Apple's software update answer, a JSON ``code`` (or ``reason``), a
    refusal page's ``data-reason``, else ``HTTP_<status>``."""
    if response.status_code == 403:
        update = machineinfo_codec.decode_software_update_required(response.content)
        if update is not None:
            return _fail(
                step,
                "OS_VERSION_TOO_LOW",
                software_update_required=True,
                os_version=update.os_version,
                build_version=update.build_version,
                status=403,
                **detail,
            )
    data: object = None
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        pass
    if isinstance(data, dict) and (data.get("code") or data.get("reason")):
        reason = str(data.get("code") or data.get("reason"))
        return _fail(
            step, reason, status=response.status_code, message=str(data.get("message") or ""), **detail
        )
    page = _Page.parse(response.text) if _is_html(response) else None
    if page is not None and page.reason:
        return _fail(step, page.reason, status=response.status_code, **detail)
    return _fail(step, f"HTTP_{response.status_code}", status=response.status_code, **detail)


def _content_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower()


def _is_html(response: httpx.Response) -> bool:
    return _content_type(response) in ("text/html", "application/xhtml+xml")


def _is_profile(response: httpx.Response) -> bool:
    return response.status_code == 200 and _content_type(response) == PROFILE_CONTENT_TYPE


# --------------------------------------------------------------------------------------------------
# Legacy and userless: POST MachineInfo to the profile's url


def _post_machine_info(
    device: VirtualDevice, url: str, body: bytes, upn: str | None, password: str | None
) -> tuple[httpx.Response, AdeStep]:
    headers = {"Content-Type": machineinfo_codec.MACHINE_INFO_CONTENT_TYPE}
    response = device.send("POST", url, content=body, headers=headers)
    challenged = False
    if response.status_code == 401 and "basic" in response.headers.get("www-authenticate", "").lower():
        challenged = True
        realm = response.headers.get("www-authenticate", "")
        if upn is None or password is None:
            raise _fail(
                "machineinfo",
                "CREDENTIALS_REQUIRED",
                status=401,
                challenge=realm,
                hint="the profile authenticates the user in Setup Assistant: give --user and --password",
            )
        token = base64.b64encode(f"{upn}:{password}".encode()).decode("ascii")
        response = device.send(
            "POST", url, content=body, headers={**headers, "Authorization": f"Basic {token}"}
        )
    if not _is_profile(response):
        raise _refusal("machineinfo", response, url=url, credentials_sent=challenged)
    return response, AdeStep("machineinfo", True, None, {"url": url, "user": upn if challenged else None})


# --------------------------------------------------------------------------------------------------
# Modern: the web view at configuration_web_url


class _Page(HTMLParser):
    """What the web view needs from a page: its forms (action, fields), a refusal's ``data-reason``, a
    form error's ``data-error``, and a TOTP secret shown to enrol (``id="totp-secret"``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, str, dict[str, str]]] = []  # (method, action, fields)
        self.reason: str | None = None
        self.error: str | None = None
        self.totp_secret: str | None = None
        self._in_form = False
        self._in_secret = False

    @classmethod
    def parse(cls, text: str) -> _Page:
        page = cls()
        page.feed(text)
        page.close()
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("data-reason") and self.reason is None:
            self.reason = a["data-reason"]
        if a.get("data-error") and self.error is None:
            self.error = a["data-error"]
        if a.get("id") == "totp-secret":
            self._in_secret = True
        if tag == "form":
            self.forms.append((a.get("method", "get").lower(), a.get("action", ""), {}))
            self._in_form = True
        elif tag in ("input", "textarea") and self._in_form and a.get("name"):
            self.forms[-1][2][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        self._in_secret = False

    def handle_data(self, data: str) -> None:
        if self._in_secret and data.strip():
            self.totp_secret = data.strip()

    def form_with(self, name: str) -> tuple[str, str, dict[str, str]] | None:
        return next((f for f in self.forms if name in f[2]), None)


def _follow(device: VirtualDevice, response: httpx.Response, headers: dict[str, str]) -> httpx.Response:
    """Follow redirects as the web view does (GET, the device info header kept)."""
    for _ in range(MAX_WEB_PAGES):
        if response.status_code not in (301, 302, 303, 307, 308) or "location" not in response.headers:
            return response
        url = urljoin(str(response.url), response.headers["location"])
        response = device.send("GET", url, headers=headers)
    raise _fail("signin", "SERVER_MISBEHAVED:signin", error="too many redirects")


def _web_sign_in(
    device: VirtualDevice,
    url: str,
    deviceinfo: str,
    upn: str | None,
    password: str | None,
    totp_secret: str | None,
    clock: Callable[[], datetime],
) -> tuple[httpx.Response, AdeStep]:
    headers = {DEVICEINFO_HEADER: deviceinfo, "Accept": "text/html,application/x-apple-aspen-config"}
    response = _follow(device, device.send("GET", url, headers=headers), headers)
    answered: set[str] = set()  # the forms already submitted: shown again means refused
    pages = 1
    enrolled_secret: str | None = None  # a TOTP secret the page gave the user to enrol
    while not _is_profile(response):
        page = _Page.parse(response.text) if _is_html(response) else None
        if page is None or not (page.reason or page.forms):
            raise _refusal("signin", response, url=str(response.url), pages=pages)
        if page.reason:
            raise _fail(
                "signin", page.reason, url=str(response.url), status=response.status_code, pages=pages
            )
        mfa, signin = page.form_with("code"), page.form_with("upn")
        fields: dict[str, str]
        if mfa is not None:
            if "mfa" in answered:
                raise _fail("signin", "MFA_REFUSED", error=page.error, upn=upn, pages=pages)
            if totp_secret is None and page.totp_secret is not None:
                enrolled_secret = page.totp_secret  # as a user adds it to an authenticator app
            secret = totp_secret or enrolled_secret
            if secret is None:
                raise _fail(
                    "signin",
                    "MFA_REQUIRED",
                    upn=upn,
                    hint="the user signs in with a TOTP code: give --totp-secret",
                )
            method, action, fields = mfa
            fields = {**fields, "code": totp_now(secret, clock())}
            answered.add("mfa")
        elif signin is not None:
            if "signin" in answered:
                raise _fail("signin", "SIGNIN_REFUSED", error=page.error, upn=upn, pages=pages)
            if upn is None or password is None:
                raise _fail(
                    "signin",
                    "CREDENTIALS_REQUIRED",
                    url=str(response.url),
                    hint="the profile signs the user in through the web view: give --user and --password",
                )
            method, action, fields = signin
            fields = {**fields, "upn": upn, "password": password}
            answered.add("signin")
        else:
            raise _fail(
                "signin", "SERVER_MISBEHAVED:signin", error="a page without a sign-in form", pages=pages
            )
        if pages >= MAX_WEB_PAGES:
            raise _fail("signin", "SERVER_MISBEHAVED:signin", error="too many pages", pages=pages)
        target = urljoin(str(response.url), action or str(response.url))
        if method == "post":
            response = device.send("POST", target, data=fields, headers=headers)
        else:
            response = device.send("GET", target, params=fields, headers=headers)
        response = _follow(device, response, headers)
        pages += 1
    detail: dict[str, object] = {"url": url, "user": upn, "mfa": "mfa" in answered, "pages": pages}
    if enrolled_secret is not None:
        detail["totp_secret_enrolled"] = enrolled_secret  # the next sign-in needs it (--totp-secret)
    return response, AdeStep("signin", True, None, detail)


# --------------------------------------------------------------------------------------------------
# Held at Setup Assistant


def wait_for_release(
    device: VirtualDevice,
    wait: float,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> AdeStep:
    """Poll the command loop (answering every command) until DeviceConfigured is acknowledged, for at
    most ``wait`` seconds (one poll at least): step ``release``, AWAITING_CONFIGURATION_STUCK if not."""
    start = monotonic()
    commands: list[str] = []
    polls = 0
    while True:
        polls += 1
        try:
            handled = device.poll()
        except (VirtualDeviceError, httpx.TransportError) as exc:
            return AdeStep("release", False, classify_failure(exc), {"error": str(exc), "commands": commands})
        commands += [h.request_type for h in handled]
        if any(h.request_type == "DeviceConfigured" and h.status == "Acknowledged" for h in handled):
            waited = round(monotonic() - start, 3)
            return AdeStep("release", True, None, {"waited_s": waited, "polls": polls, "commands": commands})
        if monotonic() - start + poll_interval > wait:
            waited = round(monotonic() - start, 3)
            return AdeStep(
                "release",
                False,
                "AWAITING_CONFIGURATION_STUCK",
                {"waited_s": waited, "polls": polls, "commands": commands, "wait_release_s": wait},
            )
        sleep(poll_interval)


# --------------------------------------------------------------------------------------------------
# The whole run


def _step_error(exc: BaseException) -> AdeStep:
    """A VirtualDevice failure (SCEP, check-in) as the step it broke."""
    step = exc.step if isinstance(exc, VirtualDeviceError) else "install"
    detail: dict[str, object] = {"error": str(exc)}
    if isinstance(exc, EnrollmentRefused):
        detail["status"] = exc.status
    return AdeStep(step, False, classify_failure(exc), detail)


def run_setup_assistant(
    device: VirtualDevice,
    abm_url: str,
    device_ca: TestDeviceCa,
    *,
    abm_client: httpx.Client | None = None,
    upn: str | None = None,
    password: str | None = None,
    totp_secret: str | None = None,
    wait_release: float = DEFAULT_WAIT_RELEASE,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_step: Callable[[AdeStep], None] | None = None,
) -> AdeResult:
    """Run Setup Assistant for ``device`` (see the module docstring); never raises for a refusal.

    ``abm_client`` reaches the activation service at ``abm_url`` (default: a client of its own; tests pass
    one over :meth:`AbmEmulator.transport`); the server is reached through the device's own client.
    ``device_ca`` signs the device's MachineInfo (the server must trust it, in test mode). ``clock`` gives
    the time of TOTP codes; ``on_step`` is called after each step (tests act between steps).
    """
    result = AdeResult(device.serial, device.udid)
    now = clock or (lambda: datetime.now(UTC))

    def record(step: AdeStep) -> None:
        result.steps.append(step)
        if on_step is not None:
            on_step(step)

    own = abm_client is None
    client = abm_client if abm_client is not None else httpx.Client(timeout=30.0)
    try:
        try:
            activation = fetch_activation_record(client, abm_url, device.serial)
        finally:
            if own:
                client.close()
        record(AdeStep("activation", True, None, activation.summary()))
        result.awaited = activation.await_device_configured
        body = device.machine_info(device_ca)
        try:
            if activation.configuration_web_url:
                deviceinfo = base64.b64encode(body).decode("ascii")
                response, step = _web_sign_in(
                    device, activation.configuration_web_url, deviceinfo, upn, password, totp_secret, now
                )
            elif activation.url:
                response, step = _post_machine_info(device, activation.url, body, upn, password)
            else:
                raise _fail("machineinfo", "SERVER_MISBEHAVED:activation", error="the profile has no url")
        except httpx.TransportError as exc:
            name = "signin" if activation.configuration_web_url else "machineinfo"
            raise _fail(name, classify_failure(exc), error=str(exc)) from exc
        record(step)
        try:
            profile = device.accept_profile(response)
        except ServerMisbehaved as exc:
            raise _fail("profile", classify_failure(exc), error=str(exc)) from exc
        record(
            AdeStep(
                "profile", True, None, {"identifier": profile.identifier, "server_url": profile.server_url}
            )
        )
        if activation.await_device_configured:
            device.facts = dataclasses.replace(device.facts, awaiting_configuration=True)
        try:
            device.run_scep()
            record(AdeStep("scep", True))
            device.complete_enrollment()
        except (VirtualDeviceError, httpx.TransportError) as exc:
            failed = _step_error(exc)
            if failed.name == "tokenupdate":
                record(AdeStep("authenticate", True))
            raise _Failed(failed) from exc
        record(AdeStep("authenticate", True))
        record(AdeStep("tokenupdate", True, None, {"awaiting_configuration": result.awaited}))
        result.enrolled = True
        if result.awaited:
            release = wait_for_release(device, wait_release, poll_interval=poll_interval, sleep=sleep)
            result.released = release.ok
            record(release)
    except _Failed as failed:
        record(failed.step)
    return result
