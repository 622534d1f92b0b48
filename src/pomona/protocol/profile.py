"""The enrollment profile (.mobileconfig): build it, encode it, and read it back as a typed view.

The profile holds two payloads: a ``com.apple.security.scep`` payload that makes the device request its
identity certificate from our SCEP endpoint, and a ``com.apple.mdm`` payload whose
``IdentityCertificateUUID`` points at the SCEP payload. Identifiers and UUIDs are stable per tenant
(``uuid5``), so a profile served again replaces the installed one instead of adding a second one.

Signing the profile is the CMS module's job; :func:`decode_profile` reads an unsigned XML profile.

References:
https://developer.apple.com/documentation/devicemanagement/toplevel
https://developer.apple.com/documentation/devicemanagement/scep
https://developer.apple.com/documentation/devicemanagement/mdm
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from pomona.protocol import plist
from pomona.protocol.errors import PlistError, ProfileError

__all__ = [
    "ACCESS_RIGHTS_ALL",
    "DEFAULT_SERVER_CAPABILITIES",
    "KNOWN_SERVER_CAPABILITIES",
    "EnrollmentProfile",
    "ProfileError",
    "build_enrollment_profile",
    "decode_profile",
    "encode_profile",
    "profile_identifier",
]

ACCESS_RIGHTS_ALL: Final = 8191
"""Every MDM access right (bits 1 to 4096)."""

DEFAULT_SERVER_CAPABILITIES: Final = ("com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken")
KNOWN_SERVER_CAPABILITIES: Final = frozenset(
    {"com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken", "com.apple.mdm.token"}
)

SCEP_KEYSIZE: Final = 2048
SCEP_KEY_USAGE: Final = 5  # signing (1) | encryption (4)
SCEP_RETRIES: Final = 3
SCEP_RETRY_DELAY: Final = 10

_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_DNS, "enroll.pomona.invalid")
_TENANT_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_UUID_RE: Final = re.compile(r"^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$")
_TOPIC_PREFIX: Final = "com.apple.mgmt."


def profile_identifier(tenant_id: str) -> str:
    """The top-level ``PayloadIdentifier`` of a tenant's enrollment profile (stable, so it replaces)."""
    return f"com.pomona.enroll.{tenant_id}"


def _stable_uuid(tenant_id: str, part: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/{part}")).upper()


def _check_subject(subject: object) -> list[list[list[str]]]:
    """Validate Apple's X.500 form: ``[[["O", "Acme"]], [["CN", "x"]]]`` (RDNs of [oid, value] pairs)."""
    if not isinstance(subject, list | tuple) or not subject:
        raise ProfileError("scep_subject must be a non-empty array of RDN arrays")
    out: list[list[list[str]]] = []
    for rdn in subject:
        if not isinstance(rdn, list | tuple) or not rdn:
            raise ProfileError("each scep_subject RDN must be a non-empty array of [oid, value] pairs")
        pairs: list[list[str]] = []
        for pair in rdn:
            if (
                not isinstance(pair, list | tuple)
                or len(pair) != 2
                or not all(isinstance(part, str) and part for part in pair)
            ):
                raise ProfileError("each scep_subject attribute must be an [oid, value] pair of strings")
            pairs.append([str(pair[0]), str(pair[1])])
        out.append(pairs)
    return out


_LOOPBACK_HTTP = re.compile(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)")


def _check_https(name: str, url: str, allow_loopback_http: bool = False) -> None:
    if allow_loopback_http and isinstance(url, str) and _LOOPBACK_HTTP.match(url):
        return
    if not isinstance(url, str) or not url.startswith("https://") or len(url) <= len("https://"):
        raise ProfileError(f"{name} must be an https:// URL")


def _check_access_rights(rights: int) -> None:
    if isinstance(rights, bool) or not isinstance(rights, int) or not 1 <= rights <= ACCESS_RIGHTS_ALL:
        raise ProfileError("access_rights must be between 1 and 8191")
    if rights & 2 and not rights & 1:
        raise ProfileError("access_rights: profile installation (2) needs profile inspection (1)")
    if rights & 128 and not rights & 64:
        raise ProfileError("access_rights: provisioning profile installation (128) needs inspection (64)")


def build_enrollment_profile(
    *,
    tenant_id: str,
    organization: str,
    display_name: str,
    scep_url: str,
    scep_challenge: str,
    scep_subject: Sequence[Sequence[Sequence[str]]],
    scep_name: str,
    server_url: str,
    check_in_url: str,
    topic: str,
    identity_uuid: str | None = None,
    access_rights: int = ACCESS_RIGHTS_ALL,
    sign_message: bool = True,
    check_out_when_removed: bool = True,
    server_capabilities: Sequence[str] = DEFAULT_SERVER_CAPABILITIES,
    allow_loopback_http: bool = False,
) -> dict[str, object]:
    """Build the .mobileconfig dictionary of a tenant's enrollment profile.

    ``allow_loopback_http`` admits ``http://`` URLs on the loopback interface only, for the virtual
    devices of demos and tests; a real iPhone refuses them.

    ``identity_uuid`` is the SCEP payload's ``PayloadUUID`` (stable per tenant when not given), which
    the MDM payload's ``IdentityCertificateUUID`` references. Raises :class:`ProfileError` for values
    Apple's schema refuses (non-https URLs, a topic outside ``com.apple.mgmt.``, bad access rights,
    unknown server capabilities, a malformed subject).
    """
    if not isinstance(tenant_id, str) or not _TENANT_ID_RE.match(tenant_id):
        raise ProfileError("tenant_id must be 1-128 characters of letters, digits, '.', '_' or '-'")
    for name, value in (
        ("organization", organization),
        ("display_name", display_name),
        ("scep_name", scep_name),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(f"{name} must be a non-empty string")
    if not isinstance(scep_challenge, str) or not scep_challenge:
        raise ProfileError("scep_challenge must be a non-empty string")
    _check_https("scep_url", scep_url, allow_loopback_http)
    _check_https("server_url", server_url, allow_loopback_http)
    _check_https("check_in_url", check_in_url, allow_loopback_http)
    if not isinstance(topic, str) or not topic.startswith(_TOPIC_PREFIX) or topic == _TOPIC_PREFIX:
        raise ProfileError("topic must start with com.apple.mgmt.")
    _check_access_rights(access_rights)
    capabilities = list(dict.fromkeys(server_capabilities))
    unknown = sorted(set(capabilities) - KNOWN_SERVER_CAPABILITIES)
    if unknown:
        raise ProfileError(f"unknown server capabilities: {', '.join(unknown)}")
    subject = _check_subject(scep_subject)
    if identity_uuid is None:
        identity_uuid = _stable_uuid(tenant_id, "scep")
    elif not isinstance(identity_uuid, str) or not _UUID_RE.match(identity_uuid):
        raise ProfileError("identity_uuid must be a UUID")

    top_identifier = profile_identifier(tenant_id)
    scep_payload: dict[str, object] = {
        "PayloadType": "com.apple.security.scep",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{top_identifier}.scep",
        "PayloadUUID": identity_uuid,
        "PayloadDisplayName": f"{organization} device identity",
        "PayloadDescription": "Requests the certificate this device uses to identify itself to the MDM server.",
        "PayloadOrganization": organization,
        "PayloadContent": {
            "URL": scep_url,
            "Name": scep_name,
            "Challenge": scep_challenge,
            "Subject": subject,
            "Keysize": SCEP_KEYSIZE,
            "Key Type": "RSA",
            "Key Usage": SCEP_KEY_USAGE,
            "Retries": SCEP_RETRIES,
            "RetryDelay": SCEP_RETRY_DELAY,
        },
    }
    mdm_payload: dict[str, object] = {
        "PayloadType": "com.apple.mdm",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{top_identifier}.mdm",
        "PayloadUUID": _stable_uuid(tenant_id, "mdm"),
        "PayloadDisplayName": f"{organization} device management",
        "PayloadDescription": "Enrolls this device in mobile device management.",
        "PayloadOrganization": organization,
        "ServerURL": server_url,
        "CheckInURL": check_in_url,
        "Topic": topic,
        "IdentityCertificateUUID": identity_uuid,
        "AccessRights": access_rights,
        "SignMessage": sign_message,
        "CheckOutWhenRemoved": check_out_when_removed,
        "ServerCapabilities": capabilities,
    }
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": top_identifier,
        "PayloadUUID": _stable_uuid(tenant_id, "profile"),
        "PayloadDisplayName": display_name,
        "PayloadOrganization": organization,
        "PayloadDescription": f"Enrolls this device in {organization}'s device management.",
        "PayloadContent": [scep_payload, mdm_payload],
    }


def encode_profile(profile: Mapping[str, object]) -> bytes:
    """Encode a profile dictionary as an XML plist (.mobileconfig, unsigned)."""
    try:
        return plist.dumps(profile)
    except PlistError as exc:
        raise ProfileError(str(exc)) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentProfile:
    """A typed view of an enrollment profile: what a device needs to enroll.

    https://developer.apple.com/documentation/devicemanagement/mdm
    """

    identifier: str
    uuid: str
    display_name: str | None
    organization: str | None
    scep_url: str
    scep_challenge: str | None = field(repr=False)
    scep_subject: tuple[tuple[tuple[str, str], ...], ...]
    scep_name: str | None
    scep_keysize: int
    scep_key_type: str
    scep_key_usage: int
    scep_retries: int
    scep_retry_delay: int
    identity_uuid: str
    server_url: str
    check_in_url: str | None
    topic: str
    sign_message: bool
    access_rights: int | None
    check_out_when_removed: bool
    server_capabilities: tuple[str, ...]
    raw: bytes = field(repr=False)

    @property
    def effective_check_in_url(self) -> str:
        """Where check-in messages go: ``CheckInURL``, or ``ServerURL`` when absent."""
        return self.check_in_url or self.server_url


def _get(d: Mapping[str, object], key: str, kind: type, where: str, *, required: bool = True) -> object:
    value = d.get(key)
    if value is None:
        if required:
            raise ProfileError(f"{where}.{key} is missing")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProfileError(f"{where}.{key} must be a {kind.__name__}")
    return value


def _str(d: Mapping[str, object], key: str, where: str) -> str:
    value = _get(d, key, str, where)
    assert isinstance(value, str)
    return value


def _opt_str(d: Mapping[str, object], key: str, where: str) -> str | None:
    value = _get(d, key, str, where, required=False)
    return value if isinstance(value, str) else None


def _opt_int(d: Mapping[str, object], key: str, where: str, default: int) -> int:
    value = _get(d, key, int, where, required=False)
    return value if isinstance(value, int) else default


def _opt_bool(d: Mapping[str, object], key: str, where: str, default: bool) -> bool:
    value = _get(d, key, bool, where, required=False)
    return value if isinstance(value, bool) else default


def _find_payload(content: list[object], payload_type: str) -> dict[str, object]:
    found = [p for p in content if isinstance(p, dict) and p.get("PayloadType") == payload_type]
    if len(found) != 1:
        raise ProfileError(f"the profile must hold exactly one {payload_type} payload, found {len(found)}")
    return found[0]


def decode_profile(body: bytes) -> EnrollmentProfile:
    """Read an unsigned enrollment profile. Raises :class:`ProfileError`.

    The profile must hold one ``com.apple.mdm`` payload whose ``IdentityCertificateUUID`` names a
    ``com.apple.security.scep`` payload of the same profile. Apple's defaults fill absent SCEP keys.
    """
    raw = bytes(body)
    try:
        top = plist.loads(raw)
    except PlistError as exc:
        raise ProfileError(f"not a profile: {exc}") from exc
    if top.get("PayloadType") != "Configuration":
        raise ProfileError("top-level PayloadType must be Configuration")
    content = _get(top, "PayloadContent", list, "profile")
    assert isinstance(content, list)
    mdm = _find_payload(content, "com.apple.mdm")
    identity_uuid = _str(mdm, "IdentityCertificateUUID", "com.apple.mdm")
    scep_candidates = [
        p
        for p in content
        if isinstance(p, dict)
        and p.get("PayloadType") == "com.apple.security.scep"
        and p.get("PayloadUUID") == identity_uuid
    ]
    if len(scep_candidates) != 1:
        raise ProfileError("IdentityCertificateUUID does not name a SCEP payload of this profile")
    scep_payload = scep_candidates[0]
    scep = _get(scep_payload, "PayloadContent", dict, "com.apple.security.scep")
    assert isinstance(scep, dict)
    subject_value = scep.get("Subject")
    subject: tuple[tuple[tuple[str, str], ...], ...] = ()
    if subject_value is not None:
        checked = _check_subject(subject_value)
        subject = tuple(tuple((pair[0], pair[1]) for pair in rdn) for rdn in checked)
    capabilities = mdm.get("ServerCapabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise ProfileError("com.apple.mdm.ServerCapabilities must be an array of strings")
    access_rights = _get(mdm, "AccessRights", int, "com.apple.mdm", required=False)
    where = "com.apple.security.scep.PayloadContent"
    return EnrollmentProfile(
        identifier=_str(top, "PayloadIdentifier", "profile"),
        uuid=_str(top, "PayloadUUID", "profile"),
        display_name=_opt_str(top, "PayloadDisplayName", "profile"),
        organization=_opt_str(top, "PayloadOrganization", "profile"),
        scep_url=_str(scep, "URL", where),
        scep_challenge=_opt_str(scep, "Challenge", where),
        scep_subject=subject,
        scep_name=_opt_str(scep, "Name", where),
        scep_keysize=_opt_int(scep, "Keysize", where, 1024),
        scep_key_type=_opt_str(scep, "Key Type", where) or "RSA",
        scep_key_usage=_opt_int(scep, "Key Usage", where, 0),
        scep_retries=_opt_int(scep, "Retries", where, 3),
        scep_retry_delay=_opt_int(scep, "RetryDelay", where, 10),
        identity_uuid=identity_uuid,
        server_url=_str(mdm, "ServerURL", "com.apple.mdm"),
        check_in_url=_opt_str(mdm, "CheckInURL", "com.apple.mdm"),
        topic=_str(mdm, "Topic", "com.apple.mdm"),
        sign_message=_opt_bool(mdm, "SignMessage", "com.apple.mdm", False),
        access_rights=access_rights if isinstance(access_rights, int) else None,
        check_out_when_removed=_opt_bool(mdm, "CheckOutWhenRemoved", "com.apple.mdm", False),
        server_capabilities=tuple(str(c) for c in capabilities),
        raw=raw,
    )
