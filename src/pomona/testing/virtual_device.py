"""A virtual iPhone/iPad that enrolls and answers commands over HTTP exactly as a real device does.

No real device is needed to test Pomona, or to check a deployment: ``VirtualDevice`` downloads the
enrollment profile, checks its CMS signature, gets its identity certificate over SCEP, checks in
(``Authenticate``, ``TokenUpdate``), runs the command loop and answers with realistic iOS reports.

Errors a caller can catch::

    VirtualDeviceError                the device could not do what it was asked
    ├── EnrollmentRefused             the server said no: ``step``, HTTP ``status``, server ``reason`` code
    ├── ServerMisbehaved              the server answered something an iPhone would reject
    │                                 (bad profile signature, wrong content type, malformed plist ...)
    └── NotEnrolledError              a call that needs an enrollment, made before ``enroll()`` or after a wipe

Network failures are not wrapped: they surface as ``httpx.TransportError``.

Steps are named ``profile``, ``scep``, ``authenticate``, ``tokenupdate``, ``command`` and ``checkout``.
Automated Device Enrollment (activation record, MachineInfo, Setup Assistant's sign-in, the wait for
DeviceConfigured) is :func:`pomona.testing.ade_device.run_setup_assistant`, over this device.
A device is not shared between threads, but many devices may run at once, one per thread: the module keeps
no global mutable state (the shared key pool lives in :mod:`pomona.testing.keypool`).

Apple references:
https://developer.apple.com/documentation/devicemanagement/implementing_device_management/
https://developer.apple.com/documentation/devicemanagement/check-in
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
import string
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pomona.protocol import checkin as checkin_codec
from pomona.protocol import cms
from pomona.protocol import command as command_codec
from pomona.protocol import machineinfo as machineinfo_codec
from pomona.protocol import profile as profile_codec
from pomona.protocol import scep as scep_codec
from pomona.protocol.profile import EnrollmentProfile
from pomona.testing import ios_responses
from pomona.testing.device_ca import TestDeviceCa, sign_machine_info
from pomona.testing.ios_responses import DeviceFacts
from pomona.testing.keypool import default_pool, generate_key

__all__ = [
    "CHECKIN_CONTENT_TYPE",
    "COMMAND_CONTENT_TYPE",
    "EnrollmentRefused",
    "HandledCommand",
    "NotEnrolledError",
    "ServerMisbehaved",
    "VirtualDevice",
    "VirtualDeviceError",
    "build_version_for",
    "random_imei",
    "random_serial",
    "random_udid",
]

CHECKIN_CONTENT_TYPE: Final = "application/x-apple-aspen-mdm-checkin"
COMMAND_CONTENT_TYPE: Final = command_codec.COMMAND_CONTENT_TYPE
PROFILE_CONTENT_TYPE: Final = "application/x-apple-aspen-config"
PKI_CONTENT_TYPE: Final = "application/x-pki-message"

Step = Literal["profile", "scep", "authenticate", "tokenupdate", "command", "checkout"]
FaultStatus = Literal["NotNow", "Error", "CommandFormatError"]

#: Commands that the device answers with "Acknowledged" and then forgets its enrollment.
_WIPING_COMMANDS: Final = frozenset({"EraseDevice"})
#: Guard against a server that never empties its queue within one connection.
MAX_COMMANDS_PER_POLL: Final = 10_000


# --------------------------------------------------------------------------------------------------
# Errors


class VirtualDeviceError(Exception):
    """Base class: the virtual device could not complete what it was asked to do."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


class EnrollmentRefused(VirtualDeviceError):
    """The server refused at ``step`` with HTTP ``status`` and reason code ``reason``.

    For SCEP failures carried inside a CertRep (HTTP 200), ``reason`` is ``SCEP_<STATUS>:<failInfo>``,
    e.g. ``SCEP_FAILURE:badRequest``. When the body has no JSON reason, ``reason`` is ``HTTP_<status>``.
    """

    def __init__(
        self,
        step: str,
        status: int,
        reason: str,
        *,
        message: str = "",
        request_id: str | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(step, f"HTTP {status} {reason}" + (f" ({message})" if message else ""))
        self.status = status
        self.reason = reason
        self.message = message
        self.request_id = request_id
        self.body = body


class ServerMisbehaved(VirtualDeviceError):
    """The server answered something a real device would reject (the test found a server bug)."""


class NotEnrolledError(VirtualDeviceError):
    """The device has no enrollment (never enrolled, checked out, or wiped)."""


# --------------------------------------------------------------------------------------------------
# Realistic identifiers

# Serial numbers use digits and consonant-like letters (no vowels that read as digits).
_SERIAL_ALPHABET: Final = "0123456789CDFGHJKLMNPQRTVWXYZ"
# Chip ids in the UDID of A12-and-later devices ("0000CCCC-00XXXXXXXXXXXXXX").
_CHIP_IDS: Final[Mapping[str, str]] = {
    "iPhone11": "8020",  # A12
    "iPhone12": "8030",  # A13
    "iPhone13": "8101",  # A14
    "iPhone14": "8110",  # A15
    "iPhone15": "8120",  # A16
    "iPhone16": "8130",  # A17 Pro
    "iPhone17": "8140",  # A18
    "iPad11": "8020",
    "iPad12": "8030",
    "iPad13": "8101",
    "iPad14": "8112",
    "iPad16": "8132",
}
# Model numbers of a few products (the US part number without the region suffix).
_MODEL_NUMBERS: Final[Mapping[str, str]] = {
    "iPhone14,7": "MPU93",
    "iPhone15,2": "MQ0T3",
    "iPhone15,3": "MQ8R3",
    "iPhone16,1": "MTU83",
    "iPhone16,2": "MU683",
    "iPad13,18": "MPQ03",
    "iPad14,1": "MK7M3",
}
# Known public builds; anything else is derived (major + 4, minor as a letter).
_KNOWN_BUILDS: Final[Mapping[str, str]] = {
    "15.8": "19H370",
    "16.7": "20H19",
    "16.7.8": "20H343",
    "17.0": "21A329",
    "17.1": "21B80",
    "17.2": "21C62",
    "17.3": "21D50",
    "17.4": "21E219",
    "17.4.1": "21E236",
    "17.5": "21F79",
    "17.6": "21G80",
    "18.0": "22A3354",
    "18.1": "22B83",
}


def random_serial(rng: secrets.SystemRandom | None = None) -> str:
    """A 12-character serial number in Apple's classic format (e.g. ``F5JM992LF193``)."""
    r = rng or secrets.SystemRandom()
    return r.choice("CDFGH") + "".join(r.choice(_SERIAL_ALPHABET) for _ in range(11))


def random_udid(product: str = "iPhone15,2") -> str:
    """A UDID as modern devices have it: ``0000<chip>-00<14 hex digits>`` (legacy: 40 hex digits)."""
    family = product.split(",", 1)[0]
    chip = _CHIP_IDS.get(family)
    if chip is None:
        return secrets.token_hex(20)
    return f"0000{chip}-00{secrets.token_hex(7).upper()}"


def _luhn_check_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def random_imei() -> str:
    """A 15-digit IMEI with an Apple-like type allocation code and a valid Luhn check digit."""
    body = "35" + "".join(secrets.choice(string.digits) for _ in range(12))
    return body + _luhn_check_digit(body)


def build_version_for(os_version: str) -> str:
    """A plausible iOS build for an OS version (``17.4`` -> ``21E219``)."""
    if os_version in _KNOWN_BUILDS:
        return _KNOWN_BUILDS[os_version]
    parts = [int(p) if p.isdigit() else 0 for p in os_version.split(".")]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    digest = int(hashlib.sha256(os_version.encode()).hexdigest(), 16)
    number = 10 + digest % 300 + patch * 20
    return f"{major + 4}{chr(ord('A') + min(minor, 25))}{number}"


def _os_major(os_version: str) -> int:
    head = os_version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _unlock_token() -> bytes:
    """Bytes shaped like an iOS escrow keybag (tagged TLV records); content is random."""
    body = b"VERS\x00\x00\x00\x04\x00\x00\x00\x04TYPE\x00\x00\x00\x04\x00\x00\x00\x02"
    body += b"UUID\x00\x00\x00\x10" + secrets.token_bytes(16)
    body += b"WPKY\x00\x00\x00\x28" + secrets.token_bytes(40)
    return b"DATA" + len(body).to_bytes(4, "big") + body


# --------------------------------------------------------------------------------------------------
# Results and fault injection


class HandledCommand(NamedTuple):
    """One command the device received and how it answered it."""

    command_uuid: str
    request_type: str
    status: str


@dataclass
class _Fault:
    target: str
    status: FaultStatus
    remaining: int | None
    error_chain: list[dict[str, Any]] | None

    def matches(self, command_uuid: str, request_type: str) -> bool:
        return self.target in ("*", command_uuid, request_type)


def default_error_chain(request_type: str, status: str) -> list[dict[str, Any]]:
    """An ErrorChain like the ones iOS sends for a failed or malformed command."""
    if status == "CommandFormatError":
        text = "The MDM command is malformed."
        return [_chain_entry(12001, "MCMDMErrorDomain", text)]
    if request_type == "InstallProfile":
        return [
            _chain_entry(4001, "MCInstallationErrorDomain", "Profile Installation Failed"),
            _chain_entry(1009, "MCProfileErrorDomain", "The profile could not be installed."),
        ]
    if request_type == "RemoveProfile":
        return [_chain_entry(1100, "MCProfileErrorDomain", "The profile could not be removed.")]
    return [_chain_entry(12021, "MCMDMErrorDomain", f"The command {request_type} could not be completed.")]


def _chain_entry(code: int, domain: str, text: str) -> dict[str, Any]:
    return {
        "ErrorCode": code,
        "ErrorDomain": domain,
        "LocalizedDescription": text,
        "USEnglishDescription": text,
    }


@dataclass
class _Enrollment:
    """What a device keeps once enrolled, and forgets on erase or checkout."""

    profile: EnrollmentProfile
    identity_cert: x509.Certificate | None = None
    ca_certs: list[x509.Certificate] = field(default_factory=list)
    push_token: bytes = b""
    push_magic: str = ""
    unlock_token: bytes = b""
    authenticated: bool = False
    token_sent: bool = False


_UNSET: Final = object()


# --------------------------------------------------------------------------------------------------
# The device


class VirtualDevice:
    """One virtual iPhone or iPad. Create, ``enroll()``, ``poll()``, ``checkout()``.

    ``client`` may be shared between devices (an ``httpx.Client`` is thread-safe); the device closes
    only a client it created. ``key`` defaults to one from the shared key pool
    (:func:`pomona.testing.keypool.default_pool`). ``pinned_server_cert`` makes ``enroll()`` insist that
    the profile is signed by exactly that certificate; an unsigned profile is refused unless
    ``allow_unsigned_profile`` (iOS installs it, marked "Not Verified"). ``on_request`` is called after
    every HTTP response the device receives; ``requests`` counts every request it attempted.
    """

    def __init__(
        self,
        enroll_url: str | None = None,
        *,
        product: str = "iPhone15,2",
        os_version: str = "17.4",
        build_version: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        imei: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        client: httpx.Client | None = None,
        verify_tls: bool = True,
        pinned_server_cert: x509.Certificate | None = None,
        allow_unsigned_profile: bool = False,
        device_name: str | None = None,
        timeout: float = 30.0,
        on_request: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        self.enroll_url = enroll_url
        self.product = product
        self.os_version = os_version
        self.build_version = build_version or build_version_for(os_version)
        self._serial = serial or random_serial()
        self._udid = udid or random_udid(product)
        is_ipad = product.startswith("iPad")
        self.imei = imei if imei is not None else (None if is_ipad else random_imei())
        self._key = key if key is not None else default_pool().take()
        self._own_client = client is None
        self._client = client if client is not None else httpx.Client(verify=verify_tls, timeout=timeout)
        self.pinned_server_cert = pinned_server_cert
        self.allow_unsigned_profile = allow_unsigned_profile
        self._on_request = on_request
        self.requests = 0
        self._faults: list[_Fault] = []
        self._enrollment: _Enrollment | None = None
        # The Apple-issued identity an ADE device signs MachineInfo with (per device CA; kept on erase).
        self._apple_identity: tuple[TestDeviceCa, cms.PrivateKey, x509.Certificate] | None = None
        model_number = _MODEL_NUMBERS.get(product, "MPQ03" if is_ipad else "MQ0T3")
        self._facts = DeviceFacts(
            udid=self._udid,
            serial_number=self._serial,
            product_name=product,
            model_name="iPad" if is_ipad else "iPhone",
            model=f"{model_number}LL/A",
            model_number=model_number,
            device_name=device_name or ("iPad" if is_ipad else "iPhone"),
            os_version=os_version,
            build_version=self.build_version,
            imei=_spaced_imei(self.imei) if self.imei else None,
            meid=self.imei[:14] if self.imei else None,
            iccid=_random_iccid() if self.imei else None,
            modem_firmware_version="1.50.03" if self.imei else None,
        )

    # -- context manager ---------------------------------------------------------------------------

    def __enter__(self) -> VirtualDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client if the device created it."""
        if self._own_client:
            self._client.close()

    def __repr__(self) -> str:
        state = "enrolled" if self.enrolled else "not enrolled"
        return f"<VirtualDevice {self.product} {self._serial} {self._udid} {state}>"

    # -- properties --------------------------------------------------------------------------------

    @property
    def udid(self) -> str:
        return self._udid

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def key(self) -> rsa.RSAPrivateKey:
        return self._key

    @property
    def facts(self) -> DeviceFacts:
        """What the device reports about itself (device name, profiles, ...)."""
        return self._facts

    @facts.setter
    def facts(self, value: DeviceFacts) -> None:
        """Replace the facts (``dataclasses.replace(device.facts, ...)``), e.g. to stage a test."""
        self._facts = value

    @property
    def enrolled(self) -> bool:
        """True once ``TokenUpdate`` was accepted, until checkout or erase."""
        return self._enrollment is not None and self._enrollment.token_sent

    @property
    def profile(self) -> EnrollmentProfile | None:
        """The decoded enrollment profile, or None."""
        return self._enrollment.profile if self._enrollment else None

    @property
    def identity_cert(self) -> x509.Certificate | None:
        return self._enrollment.identity_cert if self._enrollment else None

    @property
    def push_token(self) -> str | None:
        """The APNs token as lowercase hex, as servers store it."""
        if self._enrollment is None or not self._enrollment.push_token:
            return None
        return self._enrollment.push_token.hex()

    @property
    def push_magic(self) -> str | None:
        return self._enrollment.push_magic or None if self._enrollment else None

    @property
    def topic(self) -> str | None:
        return self._enrollment.profile.topic if self._enrollment else None

    @property
    def server_url(self) -> str | None:
        return self._enrollment.profile.server_url if self._enrollment else None

    @property
    def check_in_url(self) -> str | None:
        return self._enrollment.profile.effective_check_in_url if self._enrollment else None

    # -- Automated Device Enrollment ---------------------------------------------------------------

    def apple_identity(self, device_ca: TestDeviceCa) -> tuple[cms.PrivateKey, x509.Certificate]:
        """The device identity ``device_ca`` issued this device (made on first use, then kept, as the
        identity Apple puts in a device is kept across erases)."""
        if self._apple_identity is None or self._apple_identity[0] is not device_ca:
            key, cert = device_ca.issue_device_identity(self._udid, key=default_pool().take())
            self._apple_identity = (device_ca, key, cert)
        return self._apple_identity[1], self._apple_identity[2]

    def machine_info(
        self,
        device_ca: TestDeviceCa,
        *,
        language: str = "en",
        can_request_software_update: bool | None = None,
        digest: Literal["sha1", "sha256"] = "sha256",
        signed_attributes: bool = True,
    ) -> bytes:
        """The signed MachineInfo this device POSTs to its ADE profile's ``url`` (DER CMS SignedData).

        Signed as a device signs it: with its Apple-issued identity (here from ``device_ca``), carrying
        that identity and the device CA's certificate. iOS 17 and later add ``OS_VERSION`` and
        ``MDM_CAN_REQUEST_SOFTWARE_UPDATE`` (true unless ``can_request_software_update`` says otherwise).
        https://developer.apple.com/documentation/devicemanagement/machineinfo
        """
        key, cert = self.apple_identity(device_ca)
        modern = _os_major(self.os_version) >= 17
        content = machineinfo_codec.encode_machine_info(
            udid=self._udid,
            serial=self._serial,
            product=self.product,
            version=self.build_version,
            os_version=self.os_version if modern else None,
            imei=self.imei,
            language=language,
            mdm_can_request_software_update=(
                (True if can_request_software_update is None else can_request_software_update)
                if modern
                else None
            ),
        )
        return sign_machine_info(
            content,
            [(cert, key)],
            certificates=[cert, device_ca.device_ca.cert],
            digest=digest,
            signed_attributes=signed_attributes,
        )

    def post_machine_info(
        self,
        url: str,
        device_ca: TestDeviceCa,
        *,
        credentials: tuple[str, str] | None = None,
        can_request_software_update: bool | None = None,
    ) -> httpx.Response:
        """POST this device's signed MachineInfo to an ADE profile's ``url`` as Setup Assistant does
        (with ``Authorization: Basic`` when ``credentials`` are given, after a 401); the raw answer."""
        headers = {"Content-Type": "application/pkcs7-signature", "User-Agent": self._mdm_user_agent()}
        if credentials is not None:
            raw = f"{credentials[0]}:{credentials[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        body = self.machine_info(device_ca, can_request_software_update=can_request_software_update)
        return self._send("POST", url, content=body, headers=headers)

    # -- fault injection ---------------------------------------------------------------------------

    def inject(
        self,
        target: str = "*",
        status: FaultStatus = "NotNow",
        times: int | None = 1,
        error_chain: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Answer the next ``times`` commands matching ``target`` with ``status`` (None: forever).

        ``target`` is a RequestType, a CommandUUID or ``"*"``. ``Error`` and ``CommandFormatError``
        carry ``error_chain``, or a realistic default one.
        """
        if status not in ("NotNow", "Error", "CommandFormatError"):
            raise ValueError(f"cannot inject status {status!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for always)")
        chain = [dict(e) for e in error_chain] if error_chain is not None else None
        self._faults.append(_Fault(target, status, times, chain))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, command_uuid: str, request_type: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(command_uuid, request_type):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None

    # -- HTTP plumbing -----------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1  # counted when attempted, so that failed connections count too
        response = self._client.request(method, url, **kwargs)
        if self._on_request is not None:
            self._on_request(response)
        return response

    @staticmethod
    def _refusal(step: str, response: httpx.Response) -> EnrollmentRefused:
        reason = f"HTTP_{response.status_code}"
        message = ""
        request_id: str | None = None
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            reason = str(data.get("reason") or reason)
            message = str(data.get("message") or "")
            rid = data.get("request_id")
            request_id = str(rid) if rid is not None else None
        request_id = request_id or response.headers.get("x-request-id")
        return EnrollmentRefused(
            step, response.status_code, reason, message=message, request_id=request_id, body=response.content
        )

    def _user_agent(self) -> str:
        kind = "iPad" if self.product.startswith("iPad") else "iPhone"
        os_us = self.os_version.replace(".", "_")
        return (
            f"Mozilla/5.0 ({kind}; CPU {'OS' if kind == 'iPad' else 'iPhone OS'} {os_us} like Mac OS X) "
            f"AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{self.os_version} Mobile/15E148 Safari/604.1"
        )

    def _mdm_user_agent(self) -> str:
        return f"MDM/1.0 {self.product}/{self.os_version} ({self.build_version})"

    def signed_put(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        cert: x509.Certificate | None = None,
        key: rsa.RSAPrivateKey | None = None,
        signature: bytes | Literal["omit"] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """PUT ``body`` with an ``Mdm-Signature`` header; returns the raw response, never raises on status.

        By default the body is signed with the device identity (``cert``/``key`` override it, e.g. to
        sign with another device's identity). ``signature`` bytes are sent instead of a real signature
        (base64-encoded as usual); ``"omit"`` sends no header at all.
        """
        all_headers = {"Content-Type": content_type, "User-Agent": self._mdm_user_agent()}
        if signature == "omit":
            pass
        elif isinstance(signature, bytes):
            all_headers["Mdm-Signature"] = base64.b64encode(signature).decode("ascii")
        else:
            sign_cert = cert or self.identity_cert
            if sign_cert is None:
                raise NotEnrolledError("sign", "no identity certificate to sign with")
            der = cms.sign_detached(body, sign_cert, key or self._key)
            all_headers["Mdm-Signature"] = base64.b64encode(der).decode("ascii")
        if headers:
            all_headers.update(headers)
        return self._send("PUT", url, content=body, headers=all_headers)

    def _device_put(self, step: Step, url: str, body: bytes, content_type: str) -> httpx.Response:
        """A PUT as the device sends it: signed when the profile says SignMessage, refused unless 200."""
        sign = self._require_enrollment(step).profile.sign_message
        response = self.signed_put(url, body, content_type, signature=None if sign else "omit")
        if response.status_code != 200:
            raise self._refusal(step, response)
        return response

    def _require_enrollment(self, step: str) -> _Enrollment:
        if self._enrollment is None:
            raise NotEnrolledError(step, "the device is not enrolled")
        return self._enrollment

    # -- enrollment --------------------------------------------------------------------------------

    def enroll(self, enroll_url: str | None = None) -> None:
        """Download and verify the profile, get an identity over SCEP, then Authenticate and TokenUpdate.

        Raises ``EnrollmentRefused`` when the server refuses a step, ``ServerMisbehaved`` when it
        answers something an iPhone would reject.
        """
        self.download(enroll_url)
        self.install()

    def download(self, enroll_url: str | None = None) -> EnrollmentProfile:
        """Download and verify the profile only, as iOS keeps it under "Profile Downloaded"."""
        url = enroll_url or self.enroll_url
        if not url:
            raise ValueError("no enrollment URL")
        profile = self.fetch_profile(url)
        # Kept even if a later step fails, so that tests can inspect what the device got so far.
        self._enrollment = _Enrollment(profile=profile)
        return profile

    def install(self) -> None:
        """Install the downloaded profile: SCEP, then Authenticate and TokenUpdate."""
        self.run_scep()
        self.complete_enrollment()

    def complete_enrollment(self) -> None:
        """After SCEP: Authenticate, then TokenUpdate (tests change server state in between steps)."""
        enrollment = self._require_enrollment("authenticate")
        self._device_put(
            "authenticate", self._checkin_url(), self.authenticate_message(), CHECKIN_CONTENT_TYPE
        )
        enrollment.authenticated = True
        enrollment.push_token = secrets.token_bytes(32)
        enrollment.push_magic = str(uuid.uuid4()).upper()
        enrollment.unlock_token = _unlock_token()
        self._device_put(
            "tokenupdate", self._checkin_url(), self.token_update_message(), CHECKIN_CONTENT_TYPE
        )
        enrollment.token_sent = True

    def fetch_profile(self, url: str) -> EnrollmentProfile:
        """GET the enrollment profile, verify its CMS signature and decode it (step ``profile``)."""
        response = self._send("GET", url, headers={"User-Agent": self._user_agent(), "Accept": "*/*"})
        if response.status_code != 200:
            raise self._refusal("profile", response)
        return self.read_profile(response)

    def accept_profile(self, response: httpx.Response) -> EnrollmentProfile:
        """Keep the enrollment profile another exchange answered (ADE: the answer to MachineInfo, or
        the Setup Assistant web view's last page), as ``download()`` keeps a fetched one; then
        ``install()``. Raises ``ServerMisbehaved`` as ``fetch_profile`` does."""
        profile = self.read_profile(response)
        self._enrollment = _Enrollment(profile=profile)
        return profile

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request through the device's client, counted in ``requests`` (ADE's exchanges)."""
        return self._send(method, url, **kwargs)

    def read_profile(self, response: httpx.Response) -> EnrollmentProfile:
        """Check an answer holding an enrollment profile (content type, CMS signature, pinning) and
        decode it; raises ``ServerMisbehaved`` (step ``profile``) for what iOS would not install."""
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != PROFILE_CONTENT_TYPE:
            raise ServerMisbehaved(
                "profile", f"Content-Type {ctype!r}, iOS only installs {PROFILE_CONTENT_TYPE}"
            )
        signer: x509.Certificate | None = None
        if (
            self.allow_unsigned_profile
            and self.pinned_server_cert is None
            and _looks_like_plist(response.content)
        ):
            content = response.content
        else:
            try:
                content, signer = cms.verify_attached(response.content)
            except cms.CmsError as exc:
                raise ServerMisbehaved("profile", f"profile signature does not verify: {exc}") from exc
        if (
            self.pinned_server_cert is not None
            and signer is not None
            and signer.fingerprint(hashes.SHA256()) != self.pinned_server_cert.fingerprint(hashes.SHA256())
        ):
            raise ServerMisbehaved(
                "profile", f"profile signed by {signer.subject.rfc4514_string()}, not the pinned cert"
            )
        try:
            return profile_codec.decode_profile(content)
        except ValueError as exc:
            raise ServerMisbehaved("profile", f"profile cannot be read: {exc}") from exc

    def _checkin_url(self) -> str:
        url = self.check_in_url
        assert url is not None
        return url

    # -- SCEP --------------------------------------------------------------------------------------

    def run_scep(self) -> x509.Certificate:
        """GetCACaps, GetCACert, then PKCSReq with the profile's challenge; keeps the issued certificate."""
        enrollment = self._require_enrollment("scep")
        prof = enrollment.profile
        scep_url = prof.scep_url
        if prof.scep_keysize != self._key.key_size:
            # iOS generates the key the profile asks for; pooled keys are 2048 bits.
            self._key = generate_key(prof.scep_keysize)
        caps = self._scep_caps(scep_url)
        ca_certs = self._scep_ca_certs(scep_url)
        recipient = _pick_recipient(ca_certs)
        enrollment.ca_certs = ca_certs
        subject = _to_x509_name(prof.scep_subject) or x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, self._udid)]
        )
        csr = scep_codec.build_csr(self._key, subject, prof.scep_challenge)
        signer = _self_signed(self._key, subject)
        encryption: cms.ContentEncryption = (
            "aes128_cbc" if ({"AES", "SCEPStandard"} & caps) else "tripledes_3key"
        )
        digest: cms.DigestName = "sha256" if ({"SHA-256", "SCEPStandard"} & caps) else "sha1"
        transaction_id = scep_codec.transaction_id_for(self._key.public_key())
        nonce = secrets.token_bytes(16)
        message = scep_codec.build_pkcs_req(
            csr,
            signer,
            self._key,
            recipient,
            transaction_id=transaction_id,
            encryption=encryption,
            digest=digest,
            sender_nonce=nonce,
        )
        if "POSTPKIOperation" in caps or "SCEPStandard" in caps:
            response = self._send(
                "POST",
                scep_url,
                params={"operation": "PKIOperation"},
                content=message,
                headers={"Content-Type": PKI_CONTENT_TYPE},
            )
        else:
            response = self._send(
                "GET",
                scep_url,
                params={"operation": "PKIOperation", "message": base64.b64encode(message).decode("ascii")},
            )
        if response.status_code != 200:
            raise self._refusal("scep", response)
        try:
            result = scep_codec.decode_cert_rep(
                response.content,
                signer,
                self._key,
                ca_certs=ca_certs,
                expected_nonce=nonce,
                expected_transaction_id=transaction_id,
            )
        except ValueError as exc:
            raise ServerMisbehaved("scep", f"CertRep cannot be read: {exc}") from exc
        if result.status is not scep_codec.PkiStatus.SUCCESS:
            fail = _FAIL_INFO_NAMES.get(result.fail_info, "none") if result.fail_info is not None else "none"
            raise EnrollmentRefused("scep", response.status_code, f"SCEP_{result.status.name}:{fail}")
        mine = self._key.public_key().public_numbers()
        issued = [c for c in (result.certificate, *result.chain) if c is not None]
        cert = next((c for c in issued if _public_numbers(c) == mine), None)
        if cert is None:
            raise ServerMisbehaved("scep", "the CertRep holds no certificate for the device key")
        enrollment.identity_cert = cert
        return cert

    def _scep_caps(self, scep_url: str) -> set[str]:
        response = self._send("GET", scep_url, params={"operation": "GetCACaps"})
        if response.status_code != 200:
            raise self._refusal("scep", response)
        return {line.strip() for line in response.text.splitlines() if line.strip()}

    def _scep_ca_certs(self, scep_url: str) -> list[x509.Certificate]:
        response = self._send("GET", scep_url, params={"operation": "GetCACert"})
        if response.status_code != 200:
            raise self._refusal("scep", response)
        try:
            return [x509.load_der_x509_certificate(response.content)]
        except ValueError:
            pass
        try:
            certs = cms.load_certs_only(response.content)
        except ValueError as exc:
            raise ServerMisbehaved(
                "scep", f"GetCACert answer is neither a certificate nor PKCS#7: {exc}"
            ) from exc
        if not certs:
            raise ServerMisbehaved("scep", "GetCACert returned no certificate")
        return list(certs)

    # -- check-in messages -------------------------------------------------------------------------

    def authenticate_message(self, topic: str | None = None) -> bytes:
        """The Authenticate check-in body this device sends."""
        facts = self._facts
        return checkin_codec.encode_authenticate(
            udid=self._udid,
            topic=topic or self.topic or "",
            serial_number=facts.serial_number,
            product_name=facts.product_name,
            model=facts.model,
            model_name=facts.model_name,
            device_name=facts.device_name,
            os_version=facts.os_version,
            build_version=facts.build_version,
            imei=facts.imei,
            meid=facts.meid,
        )

    def token_update_message(self, topic: str | None = None) -> bytes:
        """The TokenUpdate check-in body (Token, PushMagic, UnlockToken, AwaitingConfiguration False)."""
        enrollment = self._require_enrollment("tokenupdate")
        return checkin_codec.encode_token_update(
            udid=self._udid,
            topic=topic or self.topic or "",
            token=enrollment.push_token,
            push_magic=enrollment.push_magic,
            unlock_token=enrollment.unlock_token,
            awaiting_configuration=self._facts.awaiting_configuration,
        )

    def checkout_message(self, topic: str | None = None) -> bytes:
        return checkin_codec.encode_checkout(udid=self._udid, topic=topic or self.topic or "")

    def idle_message(self) -> bytes:
        """The first report of a command-loop connection: ``Status: Idle``."""
        return command_codec.encode_report(udid=self._udid, status="Idle")

    def checkout(self) -> None:
        """Send CheckOut (the user removed the MDM profile) and forget the enrollment.

        Removing the MDM profile also removes the profiles it installed (the managed ones).
        """
        self._device_put("checkout", self._checkin_url(), self.checkout_message(), CHECKIN_CONTENT_TYPE)
        self.forget()
        self._facts = dataclasses.replace(
            self._facts, profiles=tuple(p for p in self._facts.profiles if not p.is_managed)
        )

    def forget(self) -> None:
        """Drop the enrollment (identity, push token) without telling the server."""
        self._enrollment = None

    def wipe(self) -> None:
        """What EraseDevice leaves: no enrollment, no profiles, the default device name."""
        self.forget()
        default_name = "iPad" if self.product.startswith("iPad") else "iPhone"
        self._facts = dataclasses.replace(self._facts, profiles=(), device_name=default_name)

    def _device_name(self) -> str:
        return self._facts.device_name

    # -- command loop ------------------------------------------------------------------------------

    def poll(self) -> list[HandledCommand]:
        """One connection of the command loop: Idle, then answer commands until the body is empty."""
        enrollment = self._require_enrollment("command")
        if not enrollment.token_sent:
            raise NotEnrolledError("command", "TokenUpdate was not accepted")
        url = self.server_url
        assert url is not None
        handled: list[HandledCommand] = []
        not_now: set[str] = set()
        body = self.idle_message()
        while True:
            response = self._device_put("command", url, body, COMMAND_CONTENT_TYPE)
            if not response.content.strip():
                return handled
            if len(handled) >= MAX_COMMANDS_PER_POLL:
                raise ServerMisbehaved(
                    "command", f"more than {MAX_COMMANDS_PER_POLL} commands in one connection"
                )
            try:
                command_uuid, request_type, params = command_codec.decode_command(response.content)
            except ValueError as exc:
                raise ServerMisbehaved("command", f"command cannot be read: {exc}") from exc
            if command_uuid in not_now:
                raise ServerMisbehaved(
                    "command", f"command {command_uuid} was sent again after NotNow in the same connection"
                )
            status, body = self._answer(command_uuid, request_type, dict(params))
            handled.append(HandledCommand(command_uuid, request_type, status))
            if status == "NotNow":
                not_now.add(command_uuid)
            if status == "Acknowledged" and request_type in _WIPING_COMMANDS:
                # The device acknowledges, then erases itself: the answer to this report is never read.
                self._device_put("command", url, body, COMMAND_CONTENT_TYPE)
                self.wipe()
                return handled

    def _answer(self, command_uuid: str, request_type: str, params: dict[str, Any]) -> tuple[str, bytes]:
        """Decide the status of one command, carry it out, and build the report for it."""
        fault = self._take_fault(command_uuid, request_type)
        payload: dict[str, object] = {}
        error_chain: list[dict[str, Any]] | None = None
        status: str
        if fault is not None:
            status = fault.status
            if status != "NotNow":
                error_chain = fault.error_chain or default_error_chain(request_type, status)
        else:
            params = _unwrap_signed_payload(request_type, params)
            try:
                payload = ios_responses.respond(request_type, params, self._facts)
            except ios_responses.UnsupportedCommandError:
                status = "CommandFormatError"
                error_chain = default_error_chain(request_type, status)
            else:
                try:
                    self._facts = ios_responses.apply_command(request_type, params, self._facts)
                    status = "Acknowledged"
                except ios_responses.UnsupportedCommandError:
                    status, payload = "Error", {}
                    error_chain = default_error_chain(request_type, status)
        report = command_codec.encode_report(
            udid=self._udid,
            status=status,
            command_uuid=command_uuid,
            error_chain=error_chain,
            payload=payload or None,
        )
        return status, report


# --------------------------------------------------------------------------------------------------
# Helpers


def _unwrap_signed_payload(request_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """InstallProfile with a CMS-signed profile: the device verifies it and installs the content."""
    payload = params.get("Payload")
    if request_type != "InstallProfile" or not isinstance(payload, bytes) or payload.lstrip()[:1] == b"<":
        return params
    try:
        content, _ = cms.verify_attached(payload)
    except cms.CmsError:
        return params  # not CMS either: apply_command reports the failure
    return {**params, "Payload": content}


def _looks_like_plist(data: bytes) -> bool:
    head = data.lstrip()[:64]
    return head.startswith(b"<?xml") or head.startswith(b"<plist") or head.startswith(b"bplist")


def _spaced_imei(imei: str) -> str:
    """IMEI as iOS reports it: ``35 674108 123456 1``."""
    digits = imei.replace(" ", "")
    return f"{digits[:2]} {digits[2:8]} {digits[8:14]} {digits[14:]}".strip()


def _random_iccid() -> str:
    digits = "8901260" + "".join(secrets.choice(string.digits) for _ in range(13))
    return " ".join(digits[i : i + 4] for i in range(0, 20, 4))


# RFC 8894 spells failInfo values in camelCase.
_FAIL_INFO_NAMES: Final[Mapping[scep_codec.FailInfo, str]] = {
    scep_codec.FailInfo.BAD_ALG: "badAlg",
    scep_codec.FailInfo.BAD_MESSAGE_CHECK: "badMessageCheck",
    scep_codec.FailInfo.BAD_REQUEST: "badRequest",
    scep_codec.FailInfo.BAD_TIME: "badTime",
    scep_codec.FailInfo.BAD_CERT_ID: "badCertId",
}


def _public_numbers(cert: x509.Certificate) -> object:
    key = cert.public_key()
    return key.public_numbers() if isinstance(key, rsa.RSAPublicKey) else None


_NAME_OIDS: Final[Mapping[str, x509.ObjectIdentifier]] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "UID": NameOID.USER_ID,
    "SN": NameOID.SURNAME,
    "E": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
}


def _to_x509_name(subject: object) -> x509.Name | None:
    """An x509.Name from the profile's Subject (already a Name, or [[["O", "x"]], [["CN", "y"]]])."""
    if subject is None:
        return None
    if isinstance(subject, x509.Name):
        return subject
    rdns: list[x509.RelativeDistinguishedName] = []
    if isinstance(subject, Iterable) and not isinstance(subject, str | bytes):
        for rdn in subject:
            attrs: list[x509.NameAttribute[Any]] = []
            pairs = rdn if rdn and isinstance(rdn[0], list | tuple) else [rdn]
            for pair in pairs:
                oid_name, value = str(pair[0]), str(pair[1])
                oid = _NAME_OIDS.get(oid_name.upper()) or x509.ObjectIdentifier(oid_name)
                attrs.append(x509.NameAttribute(oid, value))
            if attrs:
                rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns) if rdns else None


def _pick_recipient(certs: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate to encrypt the PKCSReq for: an RA (not a CA) when there is one, else the CA."""
    for cert in certs:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            return cert
    return certs[0]


def _self_signed(key: rsa.RSAPrivateKey, subject: x509.Name) -> x509.Certificate:
    """The throwaway self-signed certificate a SCEP client signs its first PKCSReq with."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
