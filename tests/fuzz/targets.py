"""The parsers anyone may reach without a credential, each with its seeds and its documented error tree.

One table for the fuzz tests (tests/fuzz/test_parsers.py: a short hypothesis run in the suite) and the
fuzz benchmark (bench/fuzz.py: 100,000 mutated inputs per parser). A target's ``run`` feeds one input to
the parser; an exception of a class in ``allowed`` is the documented refusal, anything else escaping (or
a wrong kind of answer, checked by ``run``) is a finding.

Seeds are the real captures in ../shared/vectors where they exist, plus inputs our own codecs make (the
virtual device's CSR and SCEP request, a CMS signature, Safari User-Agents, browser Accept-Language).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pomona.domain.errors import PomonaError
from pomona.domain.policy import platform_of_user_agent
from pomona.http.portal import LANGS, pick_lang
from pomona.pki.ca import CertificateAuthority
from pomona.pki.scep import ScepResponder, handle_scep_http
from pomona.protocol import cms, dep_profile, machineinfo, plist, scep
from pomona.protocol.checkin import decode_checkin
from pomona.protocol.command import decode_report
from pomona.protocol.errors import (
    CmsError,
    MachineInfoError,
    PlistError,
    ProfileError,
    ProtocolError,
    ScepMalformedError,
)
from pomona.testing.device_ca import TestDeviceCa, sign_machine_info

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"


@dataclass(frozen=True)
class Target:
    """One parser: its name, how to feed it, what it may raise, and what to start mutating from."""

    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]] = field(repr=False)
    text: bool = False  # the parser takes text: inputs are decoded as UTF-8 (errors replaced)


def _files(*patterns: str) -> list[bytes]:
    out: list[bytes] = []
    for pattern in patterns:
        out.extend(p.read_bytes() for p in sorted(VECTORS.glob(pattern)) if p.is_file())
    return out


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@cache
def _device() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fuzz device"))
        .issuer_name(_name("fuzz device"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, cert


@cache
def _responder() -> ScepResponder:
    ca = CertificateAuthority.generate("Fuzz SCEP CA")

    def issue(csr: scep.CsrInfo, msg: scep.PkiMessage) -> x509.Certificate:
        return ca.issue(csr.public_key, csr.subject, days=1)

    return ScepResponder(ca, issue, refusals=(PomonaError,))


@cache
def _csr() -> bytes:
    key, _ = _device()
    return scep.build_csr(key, _name("iPhone"), "fuzz-challenge")


def _plist_seeds() -> list[bytes]:
    return _files("micromdm+nanomdm/mdm/testdata/*.plist") + [
        b'<?xml version="1.0"?><plist version="1.0"><dict><key>a</key><integer>1</integer></dict></plist>'
    ]


def _report_seeds() -> list[bytes]:
    return _files("micromdm+nanomdm/mdm/testdata/DeviceInformation*.plist") + [
        plist.dumps({"UDID": "0000-1111", "Status": "Acknowledged", "CommandUUID": "c-1"}),
        plist.dumps({"UDID": "0000-1111", "Status": "Error", "CommandUUID": "c-2", "ErrorChain": []}),
        plist.dumps({"UDID": "0000-1111", "Status": "Idle"}),
    ]


def _cms_seeds() -> list[bytes]:
    key, cert = _device()
    return _files("micromdm+scep/testdata/PKCSReq.der") + [cms.sign(b"fuzz content", cert, key)]


def _scep_seeds() -> list[bytes]:
    key, cert = _device()
    own = scep.build_pkcs_req(_csr(), cert, key, _responder().responder_certificate, transaction_id="T-1")
    return _files("micromdm+scep/testdata/PKCSReq.der") + [own]


def _csr_seeds() -> list[bytes]:
    return _files("derived/PKCSReq.decrypted-csr.der") + [_csr()]


@cache
def _device_ca() -> TestDeviceCa:
    return TestDeviceCa.generate()


def _machine_info_plists() -> list[bytes]:
    full = machineinfo.encode_machine_info(
        udid="00008120-000A1B2C3D4E5F60",
        serial="F5JM992LF193",
        product="iPhone15,2",
        version="21E219",
        os_version="17.4",
        imei="356789012345678",
        language="en",
        mdm_can_request_software_update=True,
    )
    old = machineinfo.encode_machine_info(
        udid="a" * 40, serial="C0000000004", product="iPad4,1", version="13F69"
    )
    return [full, old]


def _machine_info_seeds() -> list[bytes]:
    ca = _device_ca()
    key, cert = ca.issue_device_identity("00008120-000A1B2C3D4E5F60")
    content = _machine_info_plists()[0]
    chain = [cert, ca.device_ca.cert]
    return [
        sign_machine_info(content, [(cert, key)], certificates=chain),
        sign_machine_info(content, [(cert, key)], certificates=chain, digest="sha1", signed_attributes=False),
    ]


def _dep_profile_seeds() -> list[bytes]:
    return _files(
        "micromdm+micromdm/dep/testdata/fetch_profile_response.json", "micromdm+nanodep/docs/*.json"
    )


def _machine_info(body: bytes) -> object:
    return machineinfo.verify_machine_info(body, _device_ca().trusted_keys)


UA_SEEDS = [
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    b"Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 Version/16.6 Mobile/15E148",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
    b"(iPhone(iPhone(iPhone OS 1",
]
LANG_SEEDS = [b"zh-CN,zh;q=0.9,en;q=0.8", b"en-US,en;q=0.5", b"fr;q=1e400, zh;q=nan, en;q=-1", b"*"]


def _scep(body: bytes) -> object:
    answer = handle_scep_http(_responder(), "POST", {"operation": "PKIOperation"}, body)
    if answer.status not in (200, 400):
        raise AssertionError(f"SCEP answered {answer.status}")
    return answer


def _user_agent(text: str) -> object:
    platform, version = platform_of_user_agent(text)
    if (platform is None) != (version is None):
        raise AssertionError("a platform without a version, or the reverse")
    return platform


def _accept_language(text: str) -> object:
    lang = pick_lang(None, text)
    if lang not in LANGS:
        raise AssertionError(f"not a language we have: {lang!r}")
    return lang


TARGETS: tuple[Target, ...] = (
    Target("plist", plist.loads, (PlistError,), _plist_seeds),
    Target("checkin", decode_checkin, (ProtocolError,), _plist_seeds),
    Target("command-report", decode_report, (ProtocolError,), _report_seeds),
    Target("cms-verify", cms.verify, (CmsError,), _cms_seeds),
    Target("machineinfo", _machine_info, (MachineInfoError,), _machine_info_seeds),
    Target("machineinfo-plist", machineinfo.decode_machine_info, (MachineInfoError,), _machine_info_plists),
    Target("dep-profile", dep_profile.decode_profile, (ProfileError,), _dep_profile_seeds),
    Target("scep-pkimessage", _scep, (), _scep_seeds),
    Target("csr", scep.decode_csr, (ScepMalformedError,), _csr_seeds),
    Target("user-agent", _user_agent, (), lambda: list(UA_SEEDS), text=True),  # type: ignore[arg-type]
    Target("accept-language", _accept_language, (), lambda: list(LANG_SEEDS), text=True),  # type: ignore[arg-type]
)


def feed(target: Target, data: bytes) -> BaseException | None:
    """Feed one input; the exception that escaped the documented tree, or None."""
    try:
        target.run(data.decode("utf-8", "replace") if target.text else data)  # type: ignore[arg-type]
    except target.allowed:
        return None
    except Exception as exc:  # noqa: BLE001 - that is the finding
        return exc
    return None
